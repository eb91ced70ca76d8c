"""Data-loading throughput: the seed's per-sample txt layout read directly vs the packed format.

Both paths produce the same training sample (decode + crop + augment + tensors, one process,
one thread); only the way images and labels are fetched differs:

- ``txt``: ``SeedTxtReader.read`` (opens and parses 9 txt files, resolves the image path) +
  ``cv2.imread`` of the png, then ``make_sample``;
- ``packed``: ``PackedDataset[i]`` (memory-mapped arrays, one ``pread`` of the image bytes);
- ``packed_cached``: the same with ``cache_mb`` (``data.image_cache_mb``) large enough for every
  image, timed after a first pass has filled the cache (a later epoch: no decoding).

Also measured: labels only (no image), and ``pose prepare`` packing speed.
Reported as samples/s per core (CPU time of this process) and wall-clock samples/s.

    python benchmarks/data_loader.py [--src SEED_LAYOUT] [--n 300] [--input-size 256] [--out JSON]

Without ``--src`` a seed layout is written from the real S9 poses of
``pose/data/c2f_vol_demo/valid.npz`` (224×224 png crops).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from pose.data import C2F_VOL_DEMO, seed_txt
from pose.data.augment import AugConfig, sample_aug
from pose.data.dataset import DEFAULT_ENLARGE, PackedDataset, make_sample, to_tensors
from pose.data.packed import load_arrays
from pose.data.prepare import prepare
from pose.data.seed_txt import SeedTxtReader

VALID = C2F_VOL_DEMO / "valid.npz"


def _timed(fn, n: int) -> dict:
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {
        "samples": n,
        "cpu_s": cpu,
        "wall_s": wall,
        "per_core_per_s": n / max(cpu, 1e-9),
        "wall_per_s": n / max(wall, 1e-9),
    }


def best_of(fn, n: int, repeats: int) -> dict:
    runs = [_timed(fn, n) for _ in range(repeats)]
    return max(runs, key=lambda r: r["per_core_per_s"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default=None, help="seed txt layout to read (default: written from valid.npz)")
    ap.add_argument("--n", type=int, default=300, help="samples to read per pass")
    ap.add_argument("--input-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="outputs/bench/data_loader.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        tmp = Path(tmp)
        if args.src is None:
            d = np.load(VALID)
            n = min(args.n, len(d["S"]))
            subjects = np.where(np.arange(n) < n * 3 // 4, 1, 9)
            seed_txt.write_layout_from_poses(tmp / "src", d["S"][:n], d["K"][:n], subjects, ["Posing"] * n)
            src = tmp / "src"
        else:
            src = Path(args.src)
        reader = SeedTxtReader(src)
        indices = reader.indices("all")[: args.n]
        n = len(indices)
        keep = tmp / "keep.txt"
        keep.write_text("".join(f"{i}\n" for i in indices))
        t0c, t0 = time.process_time(), time.perf_counter()
        metas = prepare(src, tmp / "packed", split="all", index_list=str(keep), workers=1, progress=False)
        pack = {"samples": n, "cpu_s": time.process_time() - t0c, "wall_s": time.perf_counter() - t0}
        pack["per_core_per_s"] = n / pack["cpu_s"]
        splits = [tmp / "packed" / s for s in metas]
        datasets = [PackedDataset(p, input_size=args.input_size, train=True, seed=0) for p in splits]
        rows = [(ds, i) for ds in datasets for i in range(len(ds))]
        cached = [(ds, i) for ds in (PackedDataset(p, input_size=args.input_size, train=True, seed=0, cache_mb=4096)
                                     for p in splits) for i in range(len(ds))]
        cfg, enlarge = AugConfig(), DEFAULT_ENLARGE["seed"]
        rng = np.random.default_rng(0)

        def txt_full():
            for i in indices:
                s = reader.read(i)
                img = cv2.imread(s.image_path, cv2.IMREAD_COLOR)
                to_tensors(
                    make_sample(
                        img,
                        joints_2d=s.joints_2d,
                        joints_3d=s.joints_3d,
                        bbox=s.bbox,
                        img_to_raw=s.img_to_raw,
                        K=s.K,
                        has_depth=True,
                        visible=s.visible,
                        input_size=args.input_size,
                        enlarge=enlarge,
                        params=sample_aug(cfg, rng),
                    )
                )

        def packed_full():
            for ds, i in rows:
                ds[i]

        def packed_cached():
            for ds, i in cached:
                ds[i]

        def txt_labels():
            for i in indices:
                reader.read(i)

        arrays = [load_arrays(p) for p in splits]

        def packed_labels():
            for arr in arrays:
                for i in range(len(arr["index"])):
                    {k: np.array(v[i]) for k, v in arr.items()}

        results = {}
        for name, fn in (
            ("txt_full", txt_full),
            ("packed_full", packed_full),
            ("packed_cached", packed_cached),
            ("txt_labels_only", txt_labels),
            ("packed_labels_only", packed_labels),
        ):
            fn()  # warm the page cache and imports
            results[name] = best_of(fn, n, args.repeats)

    report = {
        "n_samples": n,
        "input_size": args.input_size,
        "source": str(args.src or "valid.npz poses, 224 png crops"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "pack": pack,
        **results,
        "ratio_full_packed_over_txt": results["packed_full"]["per_core_per_s"]
        / results["txt_full"]["per_core_per_s"],
        "ratio_cached_over_packed": results["packed_cached"]["per_core_per_s"]
        / results["packed_full"]["per_core_per_s"],
        "ratio_labels_packed_over_txt": results["packed_labels_only"]["per_core_per_s"]
        / results["txt_labels_only"]["per_core_per_s"],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"samples: {n}, input {args.input_size}px, one process, one thread")
    print(f"pose prepare (validate + pack): {pack['per_core_per_s']:8.1f} samples/s per core")
    for name in ("txt_full", "packed_full", "packed_cached", "txt_labels_only", "packed_labels_only"):
        r = results[name]
        print(f"{name:20s}: {r['per_core_per_s']:8.1f} samples/s per core ({r['wall_per_s']:8.1f} wall)")
    print(
        f"ratio packed/txt, decode+crop+augment: {report['ratio_full_packed_over_txt']:.2f}x; "
        f"labels only: {report['ratio_labels_packed_over_txt']:.2f}x; cached/packed: "
        f"{report['ratio_cached_over_packed']:.2f}x"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
