"""``pose show``: ground truth beside prediction for N samples of a packed split.

Usage::

    pose show --checkpoint CKPT --data outputs/data/packed/test -n 8 --out show.png
              [--seed S | --first] [--method argmax|soft_argmax] [--root gt|fit] [--device cpu]
              [--height PX]

One row per sample: the network's input crop with the ground-truth 2D skeleton, the same crop with
the predicted 2D skeleton, then the 3D skeleton from 0° and 90° with the ground truth dashed black
under the prediction in colour (left blue, right red). The row title gives the sample (row, subject,
action) and its root-aligned MPJPE and PA-MPJPE (mm) — computed exactly as the evaluation does
(``pose.predict.decode_batch``: ground-truth root depth by default, ``--root fit`` for the C2F
bone-length fit). Samples: a seeded random choice of N (default) or the first N (``--first``).
Exit status 0, or 1 with one line on bad input (missing checkpoint/data, checkpoint of another
model size than expected, n < 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from pose import viz
from pose.data import PackedDataset
from pose.decode import DECODINGS, decode_outputs
from pose.metrics import mpjpe, pa_mpjpe
from pose.predict import Predictor

PROG = "pose show"


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (outputs/stages/d2_XX/model.pt)")
    parser.add_argument("--data", required=True, help="packed split folder (outputs/data/packed/test)")
    parser.add_argument("-n", type=int, default=8, help="number of samples (rows)")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sample choice")
    parser.add_argument("--first", action="store_true", help="take the first N samples instead of random ones")
    parser.add_argument("--method", choices=DECODINGS, default="argmax", help="decoding of the volume")
    parser.add_argument("--root", choices=("gt", "fit"), default="gt",
                        help="root depth: ground truth (evaluation's main metric) or bone-length fit")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--height", type=int, default=300, help="row height, px")
    return parser


def render(checkpoint: str | Path, data: str | Path, n: int = 8, *, seed: int = 0, first: bool = False,
           method: str = "argmax", root: str = "gt", device: str = "cpu", height: int = 300
           ) -> tuple[np.ndarray, list[dict]]:
    """Build the picture; returns (RGB uint8 image, per-sample records with the errors in mm)."""
    if int(n) < 1:
        raise ValueError(f"n: expected >= 1, got {n}")
    pred = Predictor.from_checkpoint(checkpoint, device=device, method=method)
    ds = PackedDataset(data, input_size=pred.input_size, train=False, bbox_enlarge=pred.bbox_enlarge)
    total = len(ds)
    if total == 0:
        raise ValueError(f"data: {data} holds no samples")
    k = min(int(n), total)
    rows = np.arange(k) if first else np.sort(np.random.default_rng(seed).choice(total, k, replace=False))
    samples = [ds[int(i)] for i in rows]
    batch = {key: torch.stack([s[key] for s in samples]) for key in samples[0]}
    _, vol = pred.forward(batch["image"])
    dec = decode_outputs(vol, batch["crop_to_raw"], batch["K"], d2=pred.d2, stride=pred.stride,
                         depth_range=pred.depth_range, softmax_scale=pred.softmax_scale,
                         root_depth=batch["root_depth"] if root == "gt" else None, methods=(method,))[method]
    cam = dec.camera.cpu().numpy()
    gt = batch["joints_3d"].double().numpy()
    e = mpjpe(cam, gt)
    pa = pa_mpjpe(cam, gt)
    names = ds.action_names
    out_rows, records = [], []
    for i, s in enumerate(samples):
        crop = np.clip((s["image"].permute(1, 2, 0).numpy() + 0.5) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        scale = height / crop.shape[0]
        big = viz.resize_to_height(crop, height)
        a = int(s["action"])
        action = names[a] if 0 <= a < len(names) else str(a)
        title = f"row {int(s['index'])}  S{int(s['subject'])} {action}  MPJPE {e[i]:.1f} mm  PA {pa[i]:.1f} mm"
        gt2d = viz.put_text(viz.draw_skeleton_2d(big, s["joints_2d"].numpy(), scale=scale), "ground truth")
        pr2d = viz.put_text(viz.draw_skeleton_2d(big, dec.uv_crop[i].cpu().numpy(), scale=scale),
                            f"prediction ({method})")
        g3 = gt[i] - gt[i, :1]
        p3 = cam[i] - cam[i, :1]
        views = viz.render_3d_views(
            [viz.Pose3D(g3, color=viz.GT_COLOR, linestyle="--", linewidth=1.5), viz.Pose3D(p3)],
            azimuths=(0.0, 90.0), size=height, titles=["0 deg (GT dashed)", "90 deg"],
        )
        row = np.concatenate([gt2d, pr2d, views], axis=1)
        bar = np.full((22, row.shape[1], 3), 255, np.uint8)
        bar = viz.put_text(bar, title, org=(0, 0), scale=0.45)
        out_rows.append(np.concatenate([bar, row], axis=0))
        records.append({"row": int(s["index"]), "subject": int(s["subject"]), "action": action,
                        "mpjpe_mm": float(e[i]), "pa_mpjpe_mm": float(pa[i])})
    return viz.vstack_panels(out_rows), records


def main(args: argparse.Namespace) -> int:
    try:
        img, recs = render(args.checkpoint, args.data, args.n, seed=args.seed, first=args.first,
                           method=args.method, root=args.root, device=args.device, height=args.height)
        viz.save_png(args.out, img)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    mean = float(np.mean([r["mpjpe_mm"] for r in recs]))
    print(f"{PROG}: {len(recs)} samples, mean MPJPE {mean:.1f} mm -> {args.out}", file=sys.stderr)
    return 0
