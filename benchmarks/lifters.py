"""The 2D→3D lifters over seeds and the unsupervised method's ablation, on both test splits.

    python benchmarks/lifters.py --root DIR [--config stages.yaml] [--seeds 0 1 2] [--ablation]
                                 [--set KEY=VALUE ...] [--out benchmarks/results/lifters.json]

``--root`` holds the packed test splits (``outputs/data/packed/test`` and, unless
``data.real_test`` is null, ``outputs/data/real/packed/test``: run ``dvc repro prepare real_split``
first). Each run is ``workflows.lift.run_training`` in this process (no Ray), with the
``lift.<mode>`` settings of ``--config`` and the seed replaced, as many threads as the lift stage's
worker has (``lift.<mode>.cpus``, else ``ray.cpus_per_worker``). Prints one line per run and a min / median / max table per lifter and split (P-MPJPE and
N-MPJPE as a ratio to flat depth); writes every figure and the CPU model to ``--out``.

``--ablation`` adds the unsupervised method's ingredients one at a time (seed 0): the adversarial
loss alone; + the cycle's 2D and 3D consistency terms (Chen et al.); + Kudo's heuristic; + the
bone-proportion prior (the default); + the temporal discriminator; the default without mirrored
training poses, with a perspective camera (c = 10) or with the root-to-head 2D scale; and the method
as published (perspective, root-to-head scale, neither the heuristic nor the bone prior).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import yaml

from workflows.config import load_config
from workflows.lift import SPLITS, lift_cpus, resolve_params, run_training

#: ablation rows: name → overrides of the default unsupervised settings
ABLATION = {
    "adversarial only": {"w_2d": 0.0, "w_3d": 0.0, "w_heuristic": 0.0, "w_bone": 0.0},
    "+ cycle (L_2D, L_3D)": {"w_heuristic": 0.0, "w_bone": 0.0},
    "+ Kudo heuristic": {"w_bone": 0.0},
    "+ bone-proportion prior (default)": {},
    "+ temporal discriminator": {"temporal": True},
    "default without mirrored training poses": {"mirror": 0.0},
    "default, perspective camera (c = 10)": {"camera": "perspective"},
    "default, root-to-head 2D scale": {"norm": "head"},
    "as published: perspective, root-to-head scale, no heuristic or bone prior": {
        "camera": "perspective", "norm": "head", "w_heuristic": 0.0, "w_bone": 0.0},
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(mode: str, params: dict, splits: dict[str, str], threads: int) -> dict:
    t0 = time.time()
    _, m, _ = run_training({"mode": mode, "params": params, "splits": splits, "threads": threads})
    rec = {name: {k: m[name][k] for k in ("pa_mpjpe", "mpjpe_scaled", "flat_pa_mpjpe", "flat_mpjpe_scaled",
                                          "ratio_to_flat", "n_ratio_to_flat", "sign_agnostic_pa_mpjpe")}
           for name in splits}
    rec["seconds"] = round(time.time() - t0, 1)
    return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="project root with outputs/data (packed test splits)")
    p.add_argument("--config", default="stages.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--modes", nargs="+", default=["supervised", "unsupervised"])
    p.add_argument("--ablation", action="store_true", help="also the unsupervised ablation (seed 0)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="change lift.<mode> settings for the seed runs, e.g. --set w_bone=0 (values read as YAML)")
    p.add_argument("--out", default="benchmarks/results/lifters.json")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    try:
        changes = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    except ValueError:
        p.error(f"--set: expected KEY=VALUE items, got {args.set}")
    root = Path(args.root).resolve()
    splits = {"test": str(root / "outputs" / "data" / Path(*SPLITS["test"]))}
    if cfg["data"]["real_test"] is not None:
        splits["real"] = str(root / "outputs" / "data" / Path(*SPLITS["real"]))
    for name, d in splits.items():
        if not Path(d, "meta.json").is_file():
            print(f"error: {d}: no packed {name} split (run `dvc repro prepare real_split` in {root})", file=sys.stderr)
            return 1
    out = {"cpu": cpu_model(), "config": args.config, "set": changes, "seeds": {}, "ablation": {}}
    for mode in args.modes:
        for seed in args.seeds:
            params = resolve_params(mode, {**cfg["lift"][mode], **changes, "seed": seed, "eval_every": 0})
            rec = run(mode, params, splits, lift_cpus(params, cfg))
            out["seeds"].setdefault(mode, {})[str(seed)] = rec
            print(f"{mode} seed {seed}: " + "; ".join(f"{s} P-MPJPE {rec[s]['pa_mpjpe']:.1f} mm "
                                                      f"({rec[s]['ratio_to_flat']:.2f}x flat), N-MPJPE "
                                                      f"{rec[s]['n_ratio_to_flat']:.2f}x" for s in splits)
                  + f" ({rec['seconds']:.0f} s)", flush=True)
    if args.ablation:
        for name, over in ABLATION.items():
            params = resolve_params("unsupervised", {**cfg["lift"]["unsupervised"], **over, "seed": 0, "eval_every": 0})
            rec = run("unsupervised", params, splits, lift_cpus(params, cfg))
            out["ablation"][name] = rec
            print(f"ablation '{name}': " + "; ".join(f"{s} {rec[s]['ratio_to_flat']:.2f}x flat (sign-agnostic "
                                                     f"{rec[s]['sign_agnostic_pa_mpjpe'] / rec[s]['flat_pa_mpjpe']:.2f}x)"
                                                     for s in splits)
                  + f" ({rec['seconds']:.0f} s)", flush=True)
    print(f"\n{out['cpu']}: ratio to flat depth, min / median / max over seeds {args.seeds}")
    for mode, recs in out["seeds"].items():
        for s in splits:
            for key in ("ratio_to_flat", "n_ratio_to_flat"):
                v = [r[s][key] for r in recs.values()]
                print(f"  {mode:12s} {s:5s} {'P' if key == 'ratio_to_flat' else 'N'}-MPJPE "
                      f"{min(v):.3f} / {statistics.median(v):.3f} / {max(v):.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
