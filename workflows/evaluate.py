"""Evaluate every trained curriculum stage on the held-out test split.

    python -m workflows.evaluate [--config stages.yaml] [--root DIR] [--out DIR] [--device cpu|cuda]

For each stage of ``train:`` with ``outputs/stages/<key>/model.pt`` (missing stages are an error):

- **full test** (all test samples, or a seeded random ``evaluate.max_samples`` of them) and the
  seed's quick check, a **random subset** of ``evaluate.subset_size`` samples (seeded);
- root-aligned **MPJPE** with ``argmax``, ``argmax_local`` (the argmax refined by the centroid of the
  5×5×5 cells around it; ``mpjpe_local``) and ``soft-argmax`` decoding (ground-truth root depth), the
  C2F **bone-length fit** variant (root depth fitted to the training mean limb lengths, argmax;
  ``evaluate.bone_fit``), and **PA-MPJPE** (scaled Procrustes, argmax) — 17 joints, mm;
- **per-action tables** (frame-weighted and action-wise averages) of the argmax MPJPE.
- with ``evaluate.flip_test`` (default profile: on) every image is also run mirrored and the two
  outputs averaged before decoding, the C2F test protocol (``pose.model.forward_flip_test``).

Baseline: the **mean pose** — the training split's mean root-relative pose predicted for every
test sample.

**Real-pose split** (``data.real_test``, ``outputs/data/real/packed/test``: real Human3.6M poses
rendered with their own camera and person box, never trained or validated on): the same figures
per stage, beside the embedded split, with the same mean pose (of the synthetic training split) as
its baseline. **Held-out-looks split** (``outputs/data/heldout/packed/test``, the ``heldout_split``
stage): the same real poses, cameras and boxes drawn in a look family no training set draws
(``pose.data.synth.appearance``), reported the same way. **Joint groups** (torso, arms, legs;
``skeleton.JOINT_GROUPS_17``) on every split:
3D MPJPE and PA-MPJPE (argmax) and the 2D PCK@0.1 of the person box (the argmax pose projected
with K against the projected ground truth, threshold 0.1 × the box side in raw px).

**Lifting the network's own 2D** (the pipeline a user runs on a photo): the final stage's 2D joints
(the image positions of its argmax joints) on each split fed to the lifters of
``outputs/lift/{supervised,unsupervised}/model.pt`` (``workflows/lift.py``), P-MPJPE and N-MPJPE
beside the network's own 3D, the same 2D at flat depth and the lifters on ground-truth 2D
(:func:`lift_c2f`; left out when no lifter has been trained).

Outputs (``outputs/eval/``): ``metrics.json`` (DVC metrics), ``mpjpe_per_stage.csv`` (DVC plot),
``per_action.json``, ``report.md`` (markdown tables), ``mpjpe_per_stage.png``,
``training_curves.png`` (from each stage's ``curve.csv``), and ``report.html``: the same tables, the
plots and a gallery of the final stage's best and worst test frames in one self-contained page
(``workflows/report_html.py``, ``workflows/gallery.py``). Written atomically as a set.

With ``wandb.enabled`` (the default; ``--no-wandb`` turns it off) the tables (``wandb.Table``), plots and gallery also go to one
wandb run (``job_type: evaluate``) in the curriculum's group, beside the stages' runs
(``workflows/wandb_log.py``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pose.camera import project
from pose.data import PackedDataset, load_arrays, read_meta
from pose.lifting import flat_pose, lift_2d, load_lifter, normalize_2d
from pose.metrics import (
    action_table,
    evaluate_predictions,
    format_action_table,
    group_errors,
    mpjpe,
    pa_mpjpe,
)
from pose.model import load_checkpoint
from pose.predict import predict_loader
from pose.skeleton import JOINT_GROUPS_17
from pose.targets import DepthRange
from pose.viz import plot_curves
from workflows import report_html
from workflows.common import (
    MAKE_HELDOUT,
    MAKE_REAL,
    UserError,
    outputs_dir,
    project_root,
    publish,
    require_packed,
    run_cli,
)
from workflows.config import load_config
from workflows.gallery import collect
from workflows.wandb_log import log_evaluation

#: metric name -> (decoding method, root depth) of the per-sample errors collected
VARIANTS = {"mpjpe_argmax": ("argmax", "gt"), "mpjpe_local": ("argmax_local", "gt"), "mpjpe_soft": ("soft_argmax", "gt"),
            "mpjpe_argmax_fit": ("argmax", "fit")}


def mean_pose(train_dir: Path) -> np.ndarray:
    """Mean root-relative training pose (17, 3), mm."""
    j3 = np.asarray(load_arrays(train_dir)["joints_3d"], dtype=np.float64)
    return (j3 - j3[:, :1]).mean(axis=0)


def _summary(err: np.ndarray, subset: np.ndarray) -> dict[str, float]:
    return {"full": float(err.mean()), "subset": float(err[subset].mean())}


def evaluate(cfg: dict[str, Any], root: Path, device: str = "cpu", log=print) -> dict[str, Any]:
    """Run the evaluation; returns ``{"metrics", "per_action", "rows", "gallery"}`` (nothing written)."""
    packed = outputs_dir(root, "data", "packed")
    test_dir, train_dir = packed / "test", packed / "train"
    for d in (train_dir, test_dir):
        require_packed(d)
    extra_dirs = {name: extra_split(cfg, root, name) for name in EXTRA_SPLITS}
    ckpts = {}
    for key in cfg["train"]:
        p = outputs_dir(root, "stages", key, "model.pt")
        if not p.is_file():
            raise UserError(f"stage checkpoint not found: {p} (run `dvc repro train@{key}`)")
        ckpts[key] = p
    lifters = load_lifters(root)  # before any stage is evaluated: a bad lifter file stops us now
    ev = cfg["evaluate"]
    seed = cfg["seed"]
    n_test = int(read_meta(test_dir)["count"])
    rng = np.random.default_rng(seed + 4242)
    rows = np.arange(n_test)
    if ev["max_samples"] and ev["max_samples"] < n_test:
        rows = np.sort(rng.choice(n_test, ev["max_samples"], replace=False))
    n = len(rows)
    subset = np.sort(np.random.default_rng(seed + 777).choice(n, min(ev["subset_size"], n), replace=False))

    mp = mean_pose(train_dir)
    geometry = split_geometry(test_dir, rows)
    metrics: dict[str, Any] = {"num_test": n, "num_subset": len(subset), "flip_test": bool(ev["flip_test"]),
                               "stages": {}}
    per_action: dict[str, Any] = {}
    table_rows: list[dict[str, Any]] = []
    names: list[str] | None = None
    gt = actions = None
    last_eval = None
    for key, path in ckpts.items():
        t0 = time.time()
        res, ckpt, ds = predict_split(path, test_dir, rows, cfg, device)
        names = ds.action_names
        gt, actions = res["gt"], res["action"]
        errs = _errors(res, gt)
        m: dict[str, Any] = {"d2": int(ckpt.get("d2", cfg["train"][key]["d2"])),
                             **{k: _summary(e, subset) for k, e in errs.items()},
                             "groups": limb_groups(res["mpjpe_argmax"], gt, *geometry)}
        tabs = {k: action_table(errs[k], actions, names) for k in ("mpjpe_argmax", "mpjpe_soft", "pa_mpjpe")}
        m["mpjpe_argmax"]["action_wise"] = tabs["mpjpe_argmax"]["action_wise"]
        per_action[key] = tabs
        last_eval = (ds, res["mpjpe_argmax"], errs["mpjpe_argmax"])
        metrics["stages"][key] = m
        table_rows.append({"stage": key, "d2": m["d2"], **{k: v["full"] for k, v in m.items() if isinstance(v, dict) and "full" in v},
                           "subset_mpjpe_argmax": m["mpjpe_argmax"]["subset"]})
        log(_stage_line(f"{key}:", m, n, time.time() - t0))

    base_pred = np.broadcast_to(mp, gt.shape) + gt[:, :1]
    base = {"mpjpe": mpjpe(base_pred, gt), "pa_mpjpe": pa_mpjpe(base_pred, gt)}
    metrics["baseline_mean_pose"] = {k: _summary(v, subset) for k, v in base.items()}
    metrics["baseline_mean_pose"]["groups"] = limb_groups(base_pred, gt, *geometry)
    per_action["baseline_mean_pose"] = {"mpjpe": action_table(base["mpjpe"], actions, names)}
    metrics["final"] = final_summary(metrics)
    b = metrics["final"]["baseline_mean_pose"]
    for r in table_rows:
        r["baseline_mean_pose"] = b
    finals = {"embedded": (last_eval[1], gt)}  # the final stage's argmax poses, for the lifters
    for name, split in extra_dirs.items():
        if split is None:
            continue
        extra = metrics[name] = evaluate_extra(cfg, name, split, ckpts, mp, device, log,
                                               finals if name == "real" else None)
        for r in table_rows:
            s = extra["stages"][r["stage"]]
            r.update({f"{name}_{k}": s[k]["full"] for k in ("mpjpe_argmax", "mpjpe_local", "mpjpe_soft", "pa_mpjpe")},
                     **{f"{name}_baseline_mean_pose": extra["final"]["baseline_mean_pose"]})
    lifted = lift_c2f(root, finals, log, lifters)
    if lifted:
        metrics["lifters"] = lifted

    gallery = collect(last_eval[0], last_eval[1], gt, last_eval[2], actions, names)
    return {"metrics": metrics, "per_action": per_action, "rows": table_rows, "gallery": gallery}


def final_summary(m: dict[str, Any]) -> dict[str, Any]:
    """The last stage's argmax MPJPE and PA-MPJPE against the mean pose, and whether the argmax MPJPE
    falls at every stage (``monotone_decrease``) or at least never rises by more than :data:`FLAT_MM`
    (``never_rises``); the same for the argmax refined by its local centroid (``*_local``) where
    every stage has it. ``m`` holds ``stages`` and ``baseline_mean_pose`` as ``evaluate`` writes them."""
    keys = list(m["stages"])
    b = m["baseline_mean_pose"]["mpjpe"]["full"]

    def trend(metric: str) -> tuple[list[float], bool]:
        seq = [m["stages"][k][metric]["full"] for k in keys]
        return seq, bool(all(x > y for x, y in zip(seq, seq[1:], strict=False)))

    seq, monotone = trend("mpjpe_argmax")
    flat_ok = bool(all(y <= x + FLAT_MM for x, y in zip(seq, seq[1:], strict=False)))
    out = {
        "stage": keys[-1],
        "mpjpe_argmax": seq[-1],
        "pa_mpjpe": m["stages"][keys[-1]]["pa_mpjpe"]["full"],
        "baseline_mean_pose": b,
        "baseline_pa_mpjpe": m["baseline_mean_pose"]["pa_mpjpe"]["full"],
        "reduction_vs_baseline": 1.0 - seq[-1] / b,
        "monotone_decrease": monotone,
        "never_rises": flat_ok,
    }
    if all("mpjpe_local" in m["stages"][k] for k in keys):
        seq, monotone = trend("mpjpe_local")
        out.update(mpjpe_local=seq[-1], reduction_local=1.0 - seq[-1] / b, monotone_local=monotone)
    return out


def _errors(res: dict[str, np.ndarray], gt: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample errors (N,) mm of ``predict_split``'s output: MPJPE of each :data:`VARIANTS`
    decoding present, then ``pa_mpjpe`` (scaled Procrustes of the argmax poses)."""
    errs = {k: mpjpe(res[k], gt) for k in VARIANTS if k in res}
    errs["pa_mpjpe"] = pa_mpjpe(res["mpjpe_argmax"], gt)
    return errs


def _stage_line(where: str, m: dict[str, Any], n: int, seconds: float) -> str:
    """The progress line of one stage on one split."""
    return (f"[evaluate] {where} MPJPE argmax {m['mpjpe_argmax']['full']:.1f} mm, argmax+local "
            f"{m['mpjpe_local']['full']:.1f}, soft {m['mpjpe_soft']['full']:.1f}, PA {m['pa_mpjpe']['full']:.1f} "
            f"({n} samples, {seconds:.1f} s)")


def _cell(s: dict[str, Any], key: str) -> str:
    """A table cell: ``s[key]["full"]`` to 0.1 mm, or – where the metric was not computed."""
    return f"{s[key]['full']:.1f}" if key in s else "–"


def predict_split(path: Path, split_dir: Path, rows: np.ndarray, cfg: dict[str, Any], device: str
                  ) -> tuple[dict[str, np.ndarray], dict[str, Any], Any]:
    """One stage's checkpoint on ``rows`` of a packed split → (``pose.predict.predict_loader``'s output
    with the :data:`VARIANTS` decodings, checkpoint, the ``PackedDataset``), with the ``evaluate``
    settings of ``cfg``."""
    ev = cfg["evaluate"]
    model, ckpt = load_checkpoint(path, map_location=device)
    ds = PackedDataset(split_dir, input_size=model.cfg.input_size, train=False, indices=rows,
                       bbox_enlarge=ckpt["bbox_enlarge"])
    loader = torch.utils.data.DataLoader(ds, batch_size=ev["batch_size"], shuffle=False, num_workers=0)
    res = predict_loader(model, loader, depth_range=DepthRange(*cfg["targets"]["depth_range"]), device=device,
                         softmax_scale=ckpt["softmax_scale"],
                         decodings={k: v for k, v in VARIANTS.items() if ev["bone_fit"] or v[1] == "gt"},
                         flip_test=ev["flip_test"])
    return res, ckpt, ds


def split_geometry(split_dir: Path, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K (N, 3, 3), person-box side (N,) raw px) of ``rows`` of a packed split: the stored box's
    longer side times the stored→raw scale (``img_to_raw``)."""
    a = load_arrays(split_dir)
    box = np.asarray(a["bbox"], dtype=np.float64)[rows]
    M = np.asarray(a["img_to_raw"], dtype=np.float64)[rows]
    side = np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]) * np.sqrt(np.abs(np.linalg.det(M[:, :, :2])))
    return np.asarray(a["K"], dtype=np.float64)[rows], side


def limb_groups(pred: np.ndarray, gt: np.ndarray, K: np.ndarray, side: np.ndarray) -> dict[str, dict[str, float]]:
    """``pose.metrics.group_errors`` of camera-frame poses (N, 17, 3) mm: 2D = their projections by K."""
    return group_errors(pred, gt, project(pred, K), project(gt, K), side, JOINT_GROUPS_17)


#: the evaluate-only test splits beside the embedded one: metrics key → (name in tables, folder
#: under outputs/data, the command that makes it); both hold ``data.real_test``'s poses
EXTRA_SPLITS = {"real": ("real poses", "real", MAKE_REAL), "heldout": ("held-out looks", "heldout", MAKE_HELDOUT)}
#: a stage "does not lose" what the one before had when its argmax MPJPE rises by at most this (mm)
FLAT_MM = 2.0


def extra_split(cfg: dict[str, Any], root: Path, name: str) -> Path | None:
    """The packed split ``name`` of :data:`EXTRA_SPLITS` (``outputs/data/<name>/packed/test``), checked
    whole; None when ``data.real_test`` is null; a :class:`UserError` when it is missing or incomplete."""
    if cfg["data"]["real_test"] is None:
        return None
    _, folder, made_by = EXTRA_SPLITS[name]
    split = outputs_dir(root, "data", folder, "packed", "test")
    require_packed(split, made_by)
    return split


def evaluate_extra(cfg: dict[str, Any], name: str, split: Path, ckpts: dict[str, Path], mp: np.ndarray,
                   device: str = "cpu", log=print, finals: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
                   ) -> dict[str, Any]:
    """Every stage on the split ``name`` at ``split`` (:func:`extra_split`; module docstring), the
    mean pose ``mp`` (17, 3) as its baseline. ``finals`` receives the last stage's argmax
    predictions and ground truth under the split's table name."""
    title = EXTRA_SPLITS[name][0]
    n_all = int(read_meta(split)["count"])
    ev = cfg["evaluate"]
    rows = np.arange(n_all)
    if ev["max_samples"] and ev["max_samples"] < n_all:  # the same rows on every split of the same poses
        rows = np.sort(np.random.default_rng(cfg["seed"] + 4243).choice(n_all, ev["max_samples"], replace=False))
    geometry = split_geometry(split, rows)
    out: dict[str, Any] = {"num_test": len(rows), "source": cfg["data"]["real_test"], "stages": {}}
    gt = None
    for key, path in ckpts.items():
        t0 = time.time()
        res, ckpt, _ = predict_split(path, split, rows, cfg, device)
        gt = res["gt"]
        m: dict[str, Any] = {"d2": int(ckpt.get("d2", cfg["train"][key]["d2"])),
                             **{k: {"full": float(e.mean())} for k, e in _errors(res, gt).items()},
                             "groups": limb_groups(res["mpjpe_argmax"], gt, *geometry)}
        out["stages"][key] = m
        log(_stage_line(f"{key} {title}:", m, len(rows), time.time() - t0))
    if finals is not None:
        finals[title] = (res["mpjpe_argmax"], gt)
    base = np.broadcast_to(mp, gt.shape) + gt[:, :1]
    out["baseline_mean_pose"] = {"mpjpe": {"full": float(mpjpe(base, gt).mean())},
                                 "pa_mpjpe": {"full": float(pa_mpjpe(base, gt).mean())},
                                 "groups": limb_groups(base, gt, *geometry)}
    out["final"] = final_summary(out)
    return out


#: the lift stages (``workflows.lift.MODES``) and, for each evaluation split, its name in their metrics
#: (``workflows.lift.SPLITS``); restated rather than imported, as importing workflows.lift would make
#: evaluate's code deps (dvc.yaml) the lift stages' whole closure
LIFTERS = ("supervised", "unsupervised")
_LIFT_SPLIT = {"embedded": "test", "real poses": "real"}


def load_lifters(root: Path) -> dict[str, Any]:
    """The trained lifters ``outputs/lift/<mode>/model.pt`` of :data:`LIFTERS` that exist
    ({mode: Lifter}); a :class:`UserError` naming the file when one cannot be read."""
    out = {}
    for mode in LIFTERS:
        path = outputs_dir(root, "lift", mode, "model.pt")
        if path.is_file():
            try:
                out[mode] = load_lifter(path)
            except ValueError as exc:
                raise UserError(f"{exc} (rerun `dvc repro lift_{mode}`)") from None
    return out


def lift_c2f(root: Path, finals: dict[str, tuple[np.ndarray, np.ndarray]], log=print,
             lifters: dict[str, Any] | None = None) -> dict[str, Any]:
    """The photo pipeline: the final stage's own 2D (the image positions of its argmax joints) fed to
    the lifters of ``outputs/lift/<mode>/model.pt`` (``lifters``, or :func:`load_lifters`), beside
    the final stage's 3D, on each split.

    ``finals``: {split: (argmax prediction (N, 17, 3) camera mm, ground truth (N, 17, 3) mm)}.
    Returns {split: {row: {"pa_mpjpe", "mpjpe_scaled"}}} with rows ``c2f`` (the network's 3D),
    ``flat`` (its 2D at flat depth), each lifter on its 2D and, from the lift stages' metrics, each
    lifter on the ground-truth 2D (``<mode> (GT 2D)``); {} when no lifter has been trained.
    """
    lifters = load_lifters(root) if lifters is None else lifters
    if not lifters:
        log("[evaluate] no lifters in outputs/lift: the 2D→3D lifting table is left out")
        return {}
    gt_2d = {}  # the lift stages' own figures (ground-truth 2D), by mode and split
    for mode in lifters:
        path = outputs_dir(root, "lift", mode, "metrics.json")
        gt_2d[mode] = json.loads(path.read_text()) if path.is_file() else {}

    def figures(p3d: np.ndarray, gt: np.ndarray) -> dict[str, float]:
        r = evaluate_predictions(p3d, gt, sign_agnostic=False)
        return {"pa_mpjpe": r["pa_mpjpe"], "mpjpe_scaled": r["n_mpjpe"]}

    out: dict[str, Any] = {}
    for split, (pred, gt) in finals.items():
        x2d = (pred[..., :2] / pred[..., 2:]).astype(np.float32)  # normalised camera coordinates
        rows = {"c2f": figures(pred, gt), "flat": figures(flat_pose(normalize_2d(x2d)[0]), gt)}
        for mode, lifter in lifters.items():
            rows[mode] = figures(lift_2d(lifter, x2d), gt)
            rec = gt_2d[mode].get(_LIFT_SPLIT[split])
            if rec:
                rows[f"{mode} (GT 2D)"] = {"pa_mpjpe": rec["pa_mpjpe"], "mpjpe_scaled": rec["mpjpe_scaled"]}
        out[split] = rows
        log(f"[evaluate] {split}, the network's 2D lifted: P-MPJPE "
            + ", ".join(f"{k} {v['pa_mpjpe']:.1f}" for k, v in rows.items() if "GT" not in k) + " mm")
    return out


def lift_markdown(m: dict[str, Any]) -> list[str]:
    """Report lines of :func:`lift_c2f`'s table (none without lifters)."""
    if "lifters" not in m:
        return []
    lf = m["lifters"]
    splits = list(lf)
    names = {"c2f": f"C2F network, 3D of {m['final']['stage']} (argmax)",
             "flat": "its 2D at flat depth", "supervised": "its 2D → supervised lifter",
             "unsupervised": "its 2D → unsupervised lifter (Chen et al.)",
             "supervised (GT 2D)": "ground-truth 2D → supervised lifter",
             "unsupervised (GT 2D)": "ground-truth 2D → unsupervised lifter"}
    lines = ["", "## 2D→3D lifting of the network's own 2D (the pipeline for a photo)", "",
             "The final stage's 2D joints (its argmax image positions) fed to the lifters of `outputs/lift/`, "
             "beside the network's own 3D. P-MPJPE: per-pose similarity Procrustes; N-MPJPE: root-aligned, "
             "scale-normalised; mm. Ground-truth 2D rows are the lift stages' own figures.", "",
             "| input → 3D | " + " | ".join(f"{s} P-MPJPE | {s} N-MPJPE" for s in splits) + " |",
             "|---|" + "---:|" * (2 * len(splits))]
    keys = [k for k in names if all(k in lf[s] for s in splits)]
    for k in keys:
        cells = " | ".join(f"{lf[s][k]['pa_mpjpe']:.1f} | {lf[s][k]['mpjpe_scaled']:.1f}" for s in splits)
        lines.append(f"| {names[k]} | {cells} |")
    return lines


def _markdown(result: dict[str, Any], cfg: dict[str, Any]) -> str:
    m = result["metrics"]
    lines = [
        "# Evaluation of the d2 curriculum",
        "",
        f"Held-out test split: {m['num_test']} samples (random subset: {m['num_subset']}); 17 joints, root-aligned, mm.",
        "MPJPE with ground-truth root depth unless noted; *fit* = root depth from the bone-length fit (C2F recType 3);",
        "PA = scaled Procrustes (argmax decoding). Baseline: training mean pose.",
        ("Test-time flip: on (each image and its mirror image, outputs averaged before decoding, as in C2F)."
         if cfg["evaluate"]["flip_test"] else "Test-time flip: off."),
        "",
        "*argmax+local*: the argmax refined by the centroid of the 5×5×5 cells around it (`pose.decode.argmax_local`).",
        "",
        "| stage | d2 | MPJPE argmax | MPJPE argmax+local | MPJPE soft-argmax | MPJPE argmax (fit) | PA-MPJPE | "
        "subset MPJPE argmax | action-wise argmax |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, s in m["stages"].items():
        lines.append(f"| {key} | {s['d2']} | {s['mpjpe_argmax']['full']:.1f} | {_cell(s, 'mpjpe_local')} | "
                     f"{s['mpjpe_soft']['full']:.1f} | {_cell(s, 'mpjpe_argmax_fit')} | "
                     f"{s['pa_mpjpe']['full']:.1f} | {s['mpjpe_argmax']['subset']:.1f} | "
                     f"{s['mpjpe_argmax']['action_wise']:.1f} |")
    bm = m["baseline_mean_pose"]
    lines.append(f"| mean pose | – | {bm['mpjpe']['full']:.1f} | – | – | – | {bm['pa_mpjpe']['full']:.1f} | "
                 f"{bm['mpjpe']['subset']:.1f} | – |")
    f = m["final"]
    lines += ["", f"Final stage {f['stage']}: {f['mpjpe_argmax']:.1f} mm argmax MPJPE vs {f['baseline_mean_pose']:.1f} mm "
              f"for the mean-pose baseline (reduction {100 * f['reduction_vs_baseline']:.1f} %); argmax MPJPE falls at "
              f"every stage: {_trend(f)}.", *_local_line(f), ""]
    pa = result["per_action"]
    last = f["stage"]
    lines += [f"## Per action, final stage {last} (MPJPE argmax / soft / PA) and mean-pose baseline", ""]
    lines.append(format_action_table({
        f"{last} argmax": pa[last]["mpjpe_argmax"],
        f"{last} soft-argmax": pa[last]["mpjpe_soft"],
        f"{last} PA": pa[last]["pa_mpjpe"],
        "mean pose": pa["baseline_mean_pose"]["mpjpe"],
    }))
    lines += ["", "## Per action, argmax MPJPE of every stage", ""]
    lines.append(format_action_table({k: pa[k]["mpjpe_argmax"] for k in m["stages"]}))
    lines += extra_markdown(m, "real") + extra_markdown(m, "heldout") + group_markdown(m) + lift_markdown(m)
    return "\n".join(lines) + "\n"


#: the heading of each :data:`EXTRA_SPLITS` split in the report
_EXTRA_HEADINGS = {
    "real": "Real-pose split ({n} real Human3.6M poses of `{src}`, rendered with their own camera and person box; "
            "evaluated only)",
    "heldout": "Held-out-looks split (the same {n} real poses, cameras and boxes drawn in a look family no training "
               "set draws: other body thickness, cel shading with outlines, dotted clothes on a mannequin palette, "
               "room and bokeh backgrounds, blur, noise and JPEG; evaluated only)",
}


def extra_markdown(m: dict[str, Any], name: str) -> list[str]:
    """Report lines of the :data:`EXTRA_SPLITS` split ``name`` (none without one)."""
    if name not in m:
        return []
    r = m[name]
    title = EXTRA_SPLITS[name][0]
    lines = ["", "## " + _EXTRA_HEADINGS[name].format(n=r["num_test"], src=r["source"]), "",
             "| stage | d2 | MPJPE argmax | MPJPE argmax+local | MPJPE soft-argmax | MPJPE argmax (fit) | PA-MPJPE | "
             "below mean pose |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    b = r["baseline_mean_pose"]
    for key, s in r["stages"].items():
        lines.append(f"| {key} | {s['d2']} | {s['mpjpe_argmax']['full']:.1f} | {_cell(s, 'mpjpe_local')} | "
                     f"{s['mpjpe_soft']['full']:.1f} | {_cell(s, 'mpjpe_argmax_fit')} | "
                     f"{s['pa_mpjpe']['full']:.1f} | {100 * (1 - s['mpjpe_argmax']['full'] / b['mpjpe']['full']):.1f} % |")
    lines.append(f"| mean pose | – | {b['mpjpe']['full']:.1f} | – | – | – | {b['pa_mpjpe']['full']:.1f} | – |")
    f = r["final"]
    lines += ["", f"Final stage {f['stage']} on {title}: {f['mpjpe_argmax']:.1f} mm argmax MPJPE vs "
              f"{f['baseline_mean_pose']:.1f} mm for the mean pose (reduction {100 * f['reduction_vs_baseline']:.1f} %), "
              f"PA-MPJPE {f['pa_mpjpe']:.1f} vs {f['baseline_pa_mpjpe']:.1f} mm; argmax MPJPE falls at every stage: "
              f"{_trend(f)}.", *_local_line(f)]
    return lines


def _trend(f: dict[str, Any]) -> str:
    """"yes", or "no" with whether it never rose by more than :data:`FLAT_MM` (older metrics: no such flag)."""
    if f["monotone_decrease"]:
        return "yes"
    if "never_rises" not in f:
        return "no"
    return f"no, but never rises by more than {FLAT_MM:g} mm" if f["never_rises"] else f"no, it rises by more than {FLAT_MM:g} mm"


def _local_line(f: dict[str, Any]) -> list[str]:
    """The final summary's argmax+local sentence (none when it was not computed)."""
    if "mpjpe_local" not in f:
        return []
    return [f"With the argmax refined locally: {f['mpjpe_local']:.1f} mm (reduction {100 * f['reduction_local']:.1f} %); "
            f"falls at every stage: {'yes' if f['monotone_local'] else 'no'}."]


def group_markdown(m: dict[str, Any]) -> list[str]:
    """Report lines of the per-joint-group errors of every stage on each split."""
    lines = ["", "## Per joint group (argmax): 3D MPJPE / PA-MPJPE mm, 2D PCK@0.1 of the person box", "",
             "Torso = pelvis, hips, spine, neck, head, shoulders; arms = elbows, wrists; legs = knees, ankles.", ""]
    splits = {"embedded": m, **{title: m[name] for name, (title, *_) in EXTRA_SPLITS.items() if name in m}}
    groups = list(m["baseline_mean_pose"]["groups"])
    lines.append("| split | stage | " + " | ".join(f"{g} MPJPE | {g} PA | {g} PCK2D" for g in groups) + " |")
    lines.append("|---|---|" + "---:|" * (3 * len(groups)))
    for split, sm in splits.items():
        rows = {**{k: s["groups"] for k, s in sm["stages"].items()}, "mean pose": sm["baseline_mean_pose"]["groups"]}
        for key, g in rows.items():
            cells = [f"{g[n]['mpjpe']:.1f} | {g[n]['pa_mpjpe']:.1f} | {100 * g[n]['pck2d']:.1f} %" for n in groups]
            lines.append(f"| {split} | {key} | " + " | ".join(cells) + " |")
    return lines


def _csv(rows: list[dict[str, Any]]) -> str:
    fields = ["stage", "d2", "mpjpe_argmax", "mpjpe_soft", "mpjpe_argmax_fit", "pa_mpjpe", "subset_mpjpe_argmax",
              "baseline_mean_pose", *(f"{name}_{k}" for name in EXTRA_SPLITS
                                      for k in ("mpjpe_argmax", "mpjpe_soft", "pa_mpjpe", "baseline_mean_pose"))]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{r[k]:.4f}" if isinstance(r.get(k), float) else r.get(k, "")) for k in fields})
    return buf.getvalue()


def _plots(result: dict[str, Any], root: Path, cfg: dict[str, Any], tmp: Path) -> None:
    rows = result["rows"]
    d2 = [r["d2"] for r in rows]
    series = {
        "argmax (GT root)": (d2, [r["mpjpe_argmax"] for r in rows]),
        "argmax+local (GT root)": (d2, [r["mpjpe_local"] for r in rows]),
        "soft-argmax (GT root)": (d2, [r["mpjpe_soft"] for r in rows]),
        "PA-MPJPE (argmax)": (d2, [r["pa_mpjpe"] for r in rows]),
        "mean-pose baseline": (d2, [r["baseline_mean_pose"] for r in rows]),
    }
    if all("mpjpe_argmax_fit" in r for r in rows):
        series["argmax (bone-length fit)"] = (d2, [r["mpjpe_argmax_fit"] for r in rows])
    for name, (title, *_) in EXTRA_SPLITS.items():
        if all(f"{name}_mpjpe_argmax" in r for r in rows):
            series[f"{title}: argmax (GT root)"] = (d2, [r[f"{name}_mpjpe_argmax"] for r in rows])
            series[f"{title}: mean-pose baseline"] = (d2, [r[f"{name}_baseline_mean_pose"] for r in rows])
    plot_curves(series, xlabel="d2 (depth bins)", ylabel="mm", title="Test MPJPE per curriculum stage",
                path=tmp / "mpjpe_per_stage.png")
    curves: dict[str, tuple[list[float], list[float]]] = {}
    offset = 0.0
    for key in cfg["train"]:
        p = outputs_dir(root, "stages", key, "curve.csv")
        if not p.is_file():
            continue
        with open(p) as fh:
            recs = list(csv.DictReader(fh))
        if not recs:
            continue
        x = [offset + float(r["epoch"]) for r in recs]
        curves[f"{key} val MPJPE"] = (x, [float(r["val_mpjpe"]) for r in recs])
        offset = x[-1]
    if curves:
        plot_curves(curves, xlabel="epoch (cumulative over stages)", ylabel="val MPJPE argmax (mm)",
                    title="Training curves", path=tmp / "training_curves.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m workflows.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="stages.yaml")
    p.add_argument("--root", default=None, help="project root (default: $POSE_ROOT or cwd)")
    p.add_argument("--out", default=None, help="output folder (default: <root>/outputs/eval)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=None,
                   help="log the tables and plots to the curriculum's wandb group (default: wandb.enabled, on)")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    root = project_root(args.root)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    result = evaluate(cfg, root, device=args.device)
    out = Path(args.out).resolve() if args.out else outputs_dir(root, "eval")

    tmp_plots = out.parent / f".{out.name}.plots-tmp"
    tmp_plots.mkdir(parents=True, exist_ok=True)
    try:
        _plots(result, root, cfg, tmp_plots)

        md = _markdown(result, cfg)
        plots = [(c, tmp_plots / n) for c, n in (("Test MPJPE per curriculum stage", "mpjpe_per_stage.png"),
                                                  ("Validation MPJPE over the curriculum", "training_curves.png"))
                 if (tmp_plots / n).is_file()]
        files: dict[str, Any] = {
            "metrics.json": json.dumps(result["metrics"], indent=2) + "\n",
            "per_action.json": json.dumps(result["per_action"], indent=2) + "\n",
            "report.md": md,
            "report.html": report_html.render(md, plots, result["gallery"], result["metrics"]["final"]["stage"]),
            "mpjpe_per_stage.csv": _csv(result["rows"]),
        }
        for png in tmp_plots.glob("*.png"):
            files[png.name] = png
        publish(files, out)
    finally:
        shutil.rmtree(tmp_plots, ignore_errors=True)
    if cfg["wandb"]["enabled"] if args.wandb is None else args.wandb:
        group = log_evaluation(cfg, root, result, [(c, out / n) for c, n in (
            ("Test MPJPE per curriculum stage", "mpjpe_per_stage.png"),
            ("Validation MPJPE over the curriculum", "training_curves.png")) if (out / n).is_file()])
        print(f"[evaluate] wandb {cfg['wandb']['mode']}: tables and plots in group {group}")
    f = result["metrics"]["final"]
    print(f"[evaluate] final {f['stage']}: {f['mpjpe_argmax']:.1f} mm argmax MPJPE vs mean pose "
          f"{f['baseline_mean_pose']:.1f} mm (reduction {100 * f['reduction_vs_baseline']:.1f} %); wrote {out}")
    for name, (title, *_) in EXTRA_SPLITS.items():
        if name in result["metrics"]:
            f = result["metrics"][name]["final"]
            print(f"[evaluate] {title}, {f['stage']}: {f['mpjpe_argmax']:.1f} mm argmax MPJPE vs mean pose "
                  f"{f['baseline_mean_pose']:.1f} mm (reduction {100 * f['reduction_vs_baseline']:.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
