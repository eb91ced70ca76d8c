"""Data stages of the DVC pipeline: ``synth`` (render the embedded default dataset), ``prepare``, ``real``,
``heldout``.

    python -m workflows.data synth    [--config stages.yaml] [--root DIR]
    python -m workflows.data prepare  [--config stages.yaml] [--root DIR]
    python -m workflows.data real     [--config stages.yaml] [--root DIR]
    python -m workflows.data heldout  [--config stages.yaml] [--root DIR]

``data.source`` in stages.yaml selects the data:

- ``embedded`` (default): ``synth`` runs ``pose synth --out outputs/data/raw`` (``data.synth_frames``,
  ``data.synth_seed``) and ``prepare`` packs that folder.
- a path (absolute, or relative to the project root) to real Human3.6M in the seed txt layout or
  the JSON (mks0601/3DMPPE) layout: ``synth`` only records the resolved path in
  ``outputs/data/raw/SOURCE.txt`` and ``prepare`` packs the path directly (``data.layout``,
  ``data.on_bad``, ``data.max_skip_fraction``: the largest fraction of a split that may be skipped
  as bad before ``prepare`` stops). DVC does not hash the external dataset (it is large); after
  changing its files in place run ``dvc repro -f prepare``.

``prepare`` writes ``outputs/data/packed/{train,test}`` via ``pose prepare SRC --out ... --split all``
(atomic; an interrupted run resumes from ``outputs/data/packed.partial``). Errors (missing path,
unreadable data, too much of a split bad) are one ``error:`` line and exit code 1.

The **real-pose test split** (``real``, the ``real_split`` stage; ``data.real_test``: an npz of real
poses, by default the 394 Human3.6M S9 poses of ``pose/data/c2f_vol_demo/valid.npz``; null =
none), whatever ``data.source``: rendered into ``outputs/data/real/raw`` by
``pose.data.synth.real`` (each pose with its own camera and person box, fixed looks: the same
files byte for byte on every run) and packed into ``outputs/data/real/packed/test``. It is
evaluated only (``workflows/evaluate.py``), never trained or validated on. With ``real_test: null``
the folder holds only ``NONE.txt``.

The **held-out-looks test split** (``heldout``, the ``heldout_split`` stage): the same poses,
cameras and person boxes drawn in the ``heldout`` look family of ``pose.data.synth.appearance``,
which no training set draws (body thickness outside the training ranges, cel shading with
outlines, dotted clothes on a mannequin palette, room and bokeh backgrounds, blur, noise and
JPEG), into ``outputs/data/heldout/{raw,packed/test}``: how much of what the network learned
holds on a look it never saw. Evaluated only, like the real-pose split.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import uuid
from pathlib import Path

from pose.data import prepare as pose_prepare
from pose.data.synth import cli as synth_cli
from pose.data.synth.real import HELDOUT_SEED, REAL_SEED, render_real
from pose.tools.cli import run_command
from workflows.common import UserError, outputs_dir, project_root, run_cli
from workflows.config import load_config


def source_path(source: str, root: Path) -> Path | None:
    """None for the embedded dataset, else the absolute dataset path."""
    if source == "embedded":
        return None
    p = Path(source).expanduser()
    return (p if p.is_absolute() else root / p).resolve()


def _pose(name: str, module, argv: list[str]) -> None:
    """Run ``pose NAME ARGV...`` in this process; a non-zero exit is a :class:`UserError`."""
    rc = run_command(name, module, argv)
    if rc:
        raise UserError(f"`pose {name} {' '.join(argv)}` failed with exit code {rc}")


def _replace(out: Path, tmp: Path) -> None:
    """Put the finished folder ``tmp`` in place of ``out`` (whatever ``out`` held before)."""
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def synth(cfg: dict, root: Path) -> Path:
    out = outputs_dir(root, "data", "raw")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".raw.tmp-{uuid.uuid4().hex[:8]}"
    src = source_path(cfg["data"]["source"], root)
    try:
        if src is None:
            d = cfg["data"]
            argv = ["--out", str(tmp), "--seed", str(d["synth_seed"]),
                    "--limb-mix", str(d["synth_limb_mix"]), "--tilt", str(d["synth_tilt"]), "--looks", d["synth_looks"],
                    "--appearance", d["synth_appearance"], "--varied-share", str(d["synth_varied_share"]),
                    "--pose-prior", str(d["synth_pose_prior"]), "--mirror", str(d["synth_mirror"])]
            if d["synth_frames"]:
                argv += ["--frames", str(d["synth_frames"])]
            _pose("synth", synth_cli, argv)
        else:
            if not src.exists():
                raise UserError(f"data.source: path does not exist: {src}")
            tmp.mkdir()
            (tmp / "SOURCE.txt").write_text(f"{src}\n")
        _replace(out, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def prepare(cfg: dict, root: Path) -> Path:
    src = source_path(cfg["data"]["source"], root)
    if src is None:
        src = outputs_dir(root, "data", "raw")
        if not src.is_dir():
            raise UserError(f"embedded data not rendered: {src} missing (run `dvc repro synth`)")
    elif not src.exists():
        raise UserError(f"data.source: path does not exist: {src}")

    out = outputs_dir(root, "data", "packed")
    if out.exists():
        shutil.rmtree(out)
    d = cfg["data"]
    _pose("prepare", pose_prepare, [str(src), "--out", str(out), "--layout", d["layout"], "--split", "all",
                                    "--on-bad", d["on_bad"], "--max-skip-fraction", str(d["max_skip_fraction"]),
                                    "--workers", "1"])
    for split in ("train", "test"):
        if not (out / split / "meta.json").is_file():
            shutil.rmtree(out, ignore_errors=True)
            raise UserError(f"`pose prepare` produced no {split} split from {src} (need train and test subjects)")
    return out


def _render_poses(cfg: dict, root: Path, name: str, family: str, seed: int) -> Path:
    """``data.real_test`` rendered in look ``family`` with look ``seed`` into ``outputs/data/<name>/raw``
    and packed into ``outputs/data/<name>/packed/test``; written into a temporary folder and renamed,
    so a stopped run leaves no half split."""
    npz = cfg["data"]["real_test"]
    if npz is not None and not source_path(npz, root).is_file():  # before any folder is made
        raise UserError(f"data.real_test: file not found: {source_path(npz, root)}")
    out = outputs_dir(root, "data", name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{name}.tmp"  # a fixed name: the packed meta.json records it, the same on every run
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        if npz is None:
            (tmp / "NONE.txt").write_text(f"data.real_test: null (no {name} test split)\n")
        else:
            path = source_path(npz, root)
            try:
                s = render_real(path, tmp / "raw", seed=seed, family=family)
            except ValueError as exc:
                raise UserError(f"data.real_test: {exc}") from None
            print(f"{name}: {s['frames']} real poses ({','.join(s['subjects'])}: {','.join(s['actions'])}) "
                  f"from {path}, {family} looks")
            d = cfg["data"]
            _pose("prepare", pose_prepare, [str(tmp / "raw"), "--out", str(tmp / "packed"), "--layout", "seed",
                                            "--split", "test", "--on-bad", d["on_bad"],
                                            "--max-skip-fraction", str(d["max_skip_fraction"]), "--workers", "1"])
            if not (tmp / "packed" / "test" / "meta.json").is_file():
                raise UserError(f"data.real_test: `pose prepare` produced no test split from {path}")
        _replace(out, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def real(cfg: dict, root: Path) -> Path:
    """The ``real_split`` stage: ``data.real_test`` in the ``classic`` looks (module docstring)."""
    return _render_poses(cfg, root, "real", "classic", REAL_SEED)


def heldout(cfg: dict, root: Path) -> Path:
    """The ``heldout_split`` stage: ``data.real_test`` in the ``heldout`` looks (module docstring)."""
    return _render_poses(cfg, root, "heldout", "heldout", HELDOUT_SEED)


STEPS = {"synth": synth, "prepare": prepare, "real": real, "heldout": heldout}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m workflows.data", description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=STEPS)
    p.add_argument("--config", default="stages.yaml")
    p.add_argument("--root", default=None, help="project root (default: $POSE_ROOT or cwd)")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    root = project_root(args.root)
    out = STEPS[args.step](cfg, root)
    print(f"{args.step}: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
