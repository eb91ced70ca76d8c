"""``pose synth``: render the embedded default dataset (seed txt layout, 224×224 crops)."""

from __future__ import annotations

import argparse
import os
import sys

import cv2
import numpy as np

from pose.data.synth.generate import LOOKS, TRAIN_FAMILIES
from pose.skeleton import BONES_17, LEFT_17, RIGHT_17, to17

#: BGR colours of the preview: right side red, left side blue, centre green
_RIGHT, _LEFT, _MID = (40, 40, 230), (230, 120, 30), (40, 200, 40)


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (seed txt layout)")
    parser.add_argument("--frames", type=int, default=4000,
                        help="approximate total number of frames (~83%% train, 17%% test; default 4000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed → byte-identical files)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes (the output does not depend on it)")
    parser.add_argument("--test-clips", default=None,
                        help="comma-separated clip names held out for the test subjects "
                        "(default dance_b,getup_faceup,run,spinkick)")
    parser.add_argument("--limb-mix", type=float, default=0.0, metavar="P",
                        help="probability that each limb of a training frame comes from a random moment of "
                        "another training clip (new training poses; default 0)")
    parser.add_argument("--tilt", type=float, default=0.0, metavar="P",
                        help="probability that a training pose is tilted about the pelvis by up to 90 degrees "
                        "(default 0)")
    parser.add_argument("--pose-prior", type=float, default=0.0, metavar="P",
                        help="probability that each arm and leg of a training frame is re-posed at joint angles "
                        "drawn within human joint-angle limits (default 0)")
    parser.add_argument("--mirror", type=float, default=0.0, metavar="P",
                        help="probability that a training pose is replaced by its left/right mirror image (default 0)")
    parser.add_argument("--looks", choices=LOOKS, default="sequence",
                        help="draw clothes/girth/light once per sequence (default) or per training frame")
    parser.add_argument("--appearance", choices=TRAIN_FAMILIES, default="classic",
                        help="look family of the training frames: classic (one shading model, plain backgrounds), "
                        "varied (appearance randomisation: body thickness, four shading models, textures, six "
                        "background families, occluders, colour/blur/noise/JPEG) or mixed (each look varied with "
                        "probability --varied-share, else classic); the test split is always classic")
    parser.add_argument("--varied-share", type=float, default=0.5, metavar="P",
                        help="with --appearance mixed: the share of varied looks (default 0.5)")
    parser.add_argument("--preview", default=None, metavar="PNG",
                        help="also write a grid of rendered samples with their 2D joints (read back from the files)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def read_sample_2d(root: str, index: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(image BGR (224,224,3), 2D joints (32,2) crop px, label) of a written sample."""
    img = cv2.imread(os.path.join(root, "images", f"{index}.png"), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{root}/images/{index}.png: cannot read")
    uv = np.loadtxt(os.path.join(root, "gt_joint_2d_raw_new", f"{index}.txt"))
    with open(os.path.join(root, "info_all", f"{index}.txt")) as f:
        info = dict(line.split(maxsplit=1) for line in f.read().splitlines())
    video = info["video_name"].strip().split("\\")
    label = f"{index} {video[-2]} {info['action_name'].strip()} c{info['camera_id'].strip()}"
    return img, uv, label


def draw_joints(img: np.ndarray, uv17: np.ndarray, scale: int = 1) -> np.ndarray:
    """Draw the 17-joint skeleton (right red, left blue) onto a copy of ``img`` upscaled by ``scale``."""
    out = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) if scale > 1 else img.copy()
    p = (uv17 + 0.5) * scale - 0.5
    for a, b in BONES_17:
        col = _RIGHT if b in RIGHT_17 else _LEFT if b in LEFT_17 else _MID
        cv2.line(out, (int(round(p[a, 0] * 16)), int(round(p[a, 1] * 16))),
                 (int(round(p[b, 0] * 16)), int(round(p[b, 1] * 16))), col, 2, cv2.LINE_AA, 4)
    for j, q in enumerate(p):
        col = _RIGHT if j in RIGHT_17 else _LEFT if j in LEFT_17 else _MID
        cv2.circle(out, (int(round(q[0] * 16)), int(round(q[1] * 16))), 3 * 16, col, -1, cv2.LINE_AA, 4)
    return out


def write_preview(root: str, path: str, n: int = 16, cols: int = 4) -> str:
    """Grid of ``n`` samples spread over the data set (train and test), raw crop beside the crop
    with its 2D joints from ``gt_joint_2d_raw_new`` (right side red, left side blue)."""
    total = len(os.listdir(os.path.join(root, "images")))
    idx = np.unique(np.linspace(0, total - 1, n).round().astype(int))
    tiles = []
    for i in idx:
        img, uv, label = read_sample_2d(root, int(i))
        tile = np.concatenate([img, draw_joints(img, to17(uv))], axis=1)
        cv2.putText(tile, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(tile, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.concatenate([np.concatenate(tiles[r:r + cols], axis=1) for r in range(0, len(tiles), cols)], axis=0)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, grid):
        raise OSError(f"preview: cannot write {path}")
    return path


def main(args: argparse.Namespace) -> int:
    from pose.data.synth.generate import DEFAULT_TEST_CLIPS, SynthConfig, generate

    test_clips = tuple(args.test_clips.split(",")) if args.test_clips else DEFAULT_TEST_CLIPS
    try:
        cfg = SynthConfig(frames=args.frames, seed=args.seed, workers=max(1, args.workers), test_clips=test_clips,
                          limb_mix=args.limb_mix, tilt=args.tilt, looks=args.looks,
                          pose_prior=args.pose_prior, mirror=args.mirror, appearance=args.appearance,
                          varied_share=args.varied_share)
        s = generate(args.out, cfg, force=args.force, progress=not args.quiet)
    except (FileExistsError, ValueError) as exc:
        print(f"pose synth: error: {exc}", file=sys.stderr)
        return 2
    print(f"pose synth: {s['frames']} frames ({s['train_frames']} train {','.join(s['train_subjects'])}; "
          f"{s['test_frames']} test {','.join(s['test_subjects'])} on unseen actions {','.join(s['test_actions'])}) "
          f"→ {os.path.abspath(args.out)} in {s['seconds']:.1f} s "
          f"({s['frames_per_s'] / cfg.workers:.0f} frames/s per worker, {cfg.workers} worker(s))")
    if args.preview:
        print(f"preview: {write_preview(args.out, args.preview)}")
    return 0
