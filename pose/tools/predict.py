"""``pose predict``: run a trained checkpoint on images, folders of images and videos.

Usage::

    pose predict PATH... --checkpoint CKPT --out DIR [--bbox x1,y1,x2,y2 | --max-people N | --no-detect]
                 [--intrinsics fx,fy,cx,cy] [--root-depth MM] [--heatmaps] [--lifter LIFTER_CKPT] [--device cpu|cuda]
                 [--method argmax|argmax_local|soft_argmax] [--batch-size N] [--max-frames N] [--height PX]

PATH is an image file, a folder (its images and videos, not recursive, sorted by name) or a video
file (``.mp4 .avi .mov .mkv .webm .m4v .mpg .mpeg``).

Where the person is: ``--bbox`` gives the box for every input. Without it, people are found with
OpenCV's HOG people detector (``pose.detect``; it ships inside OpenCV, nothing is downloaded) and
each of the ``--max-people`` largest is predicted from its own box; when none is found one line
says so and the whole image is used. A video uses the largest person of each frame. ``--no-detect``
uses the whole image (for images that are already crops of one person).

Outputs in DIR:

- ``<name>.json`` per image (the largest person), ``<name>_person2.json``, ``<name>_person3.json``...
  for the other people found, ``<name>/frame_NNNNNN.json`` per video frame (schema below);
- ``<name>.png`` per image: the image with the 2D skeleton beside the 3D skeleton seen from 0°,
  15° and 165° (``pose.viz.pose_panel``; height ``--height``, default 400 px, width = the image
  resized to that height + 3 × height), every person's box drawn; one such row per person found.
  With ``--lifter`` each person's row is followed by a row showing the stage-1 2D joints and the
  lifter's 3D from the same angles (chen-cvpr2019 demo);
- ``<name>.mp4`` per video (mp4v): the same picture for every frame;
- ``<name>_heatmaps.png`` (``<name>/frame_NNNNNN_heatmaps.png``) with ``--heatmaps``: every joint's
  2D heatmap over the network's input crop and its depth profile (``pose.viz.heatmap_grid``).

Names are the input file's stem (``_2``, ``_3``... appended when two inputs share a stem).
Colours: the person's left limbs blue, right limbs red, spine/head green.

JSON schema (``"schema": "c2f-pose.prediction/1"``; numbers are finite floats; px use the
pixel-centre convention of the *original* image, mm are camera axes X right, Y down, Z forward)::

    schema, source (input path), frame (video frame index or null), checkpoint, stage, d2,
    image_size [W, H], bbox [x1, y1, x2, y2] (box edges, px), bbox_source "given"|"detected"|"full_image",
    person (1 = the largest person found), people (people predicted in this image),
    detection_score (the detector's SVM margin, or null when the box was not detected),
    camera {K 3x3, source "given"|"assumed"}, root_depth_mm, root_depth_source "given"|"bone_fit",
    method "argmax"|"argmax_local"|"soft_argmax" (the decoding of the primary fields),
    joint_names [17 names, pose.skeleton.JOINT_NAMES_17 order],
    joints {name: {index, uv [u, v] px, xyz_mm [x, y, z] root-relative, xyz_camera_mm or null,
                   confidence}},
    joints_2d (17x2 px), joints_3d_mm (17x3 root-relative), joints_3d_camera_mm (17x3 or null:
    only with --intrinsics), z_rel_mm (17), confidence (17, peak of each joint's 3D heatmap),
    joints_2d_stage1 (17x2 px, argmax of the stage-1 2D heatmaps),
    decodings {argmax: {...}, soft_argmax: {...}} each {joints_2d, joints_3d_mm,
               joints_3d_camera_mm, z_rel_mm, root_depth_mm},
    lifter (path) and lifted_3d_mm (17x3 root-relative) — only with --lifter.

Bad input (an unreadable image, a video that does not open, a bbox outside an image) prints one
line ``pose predict: error: PATH: reason`` and the other inputs are still processed; a checkpoint
that cannot be loaded (missing, not a checkpoint, weights of another model size) stops at once.
Exit status: 0 if every input succeeded, 1 if any failed, 2 if the checkpoint/lifter failed to load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from pose import viz
from pose.decode import DECODINGS
from pose.detect import Detection, detect_people
from pose.lifting import lift_2d, load_lifter
from pose.predict import PosePrediction, Predictor, check_bbox, intrinsics_matrix, load_image

SCHEMA = "c2f-pose.prediction/1"
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
PROG = "pose predict"


def _floats(text: str, n: int, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: expected {n} comma-separated numbers, got {text!r}") from None
    if len(vals) != n or not all(np.isfinite(vals)):
        raise argparse.ArgumentTypeError(f"{what}: expected {n} finite comma-separated numbers, got {text!r}")
    return vals


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = (parser.description or "") + " (see `pydoc pose.tools.predict` for the JSON schema)"
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image file, folder of images/videos, or video")
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (outputs/stages/d2_XX/model.pt)")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--bbox", type=lambda s: _floats(s, 4, "--bbox"), default=None,
                        help="person box x1,y1,x2,y2 in image px for every input (default: find the people)")
    parser.add_argument("--max-people", type=int, default=3,
                        help="without --bbox: predict at most this many people per image, largest first "
                             "(default 3; a video uses the largest person of each frame)")
    parser.add_argument("--no-detect", action="store_true",
                        help="without --bbox: do not look for people, use the whole image (pre-cropped images)")
    parser.add_argument("--intrinsics", type=lambda s: _floats(s, 4, "--intrinsics"), default=None,
                        help="fx,fy,cx,cy of the input images: adds camera-frame 3D to the JSON")
    parser.add_argument("--root-depth", type=float, default=None,
                        help="root (pelvis) depth in mm; default: C2F bone-length fit")
    parser.add_argument("--heatmaps", action="store_true", help="also write a heatmap grid PNG per image/frame")
    parser.add_argument("--lifter", default=None,
                        help="lifter checkpoint (workflows/lift.py): also lift the stage-1 2D joints to 3D")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:0, ...)")
    parser.add_argument("--method", choices=DECODINGS, default="argmax",
                        help="decoding of the primary fields (every decoding is always in the JSON): argmax, "
                             "argmax_local (argmax refined by its local centroid) or soft_argmax")
    parser.add_argument("--flip-test", action="store_true",
                        help="also run each image mirrored and average the outputs (C2F test protocol; 2x time)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--max-frames", type=int, default=None, help="at most this many frames per video")
    parser.add_argument("--height", type=int, default=400, help="height of the PNG/MP4 picture, px")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


# ----------------------------------------------------------------------------------------------
def _err(msg: str) -> None:
    tqdm.write(f"{PROG}: error: {' '.join(str(msg).split())}", file=sys.stderr)


@dataclass
class _Item:
    """One thing to process: an image file, or a video file."""

    path: Path
    kind: str  # "image" | "video"
    name: str


@dataclass
class _Job:
    """One person of one image to predict: ``bbox`` (4,) px or None (the whole image), ``person``
    1-based rank (largest first), ``det`` the detection it came from (None: given box or whole image),
    ``boxes`` every detected box of the image (drawn on each person's picture)."""

    item: _Item
    img: np.ndarray
    bbox: np.ndarray | None
    person: int
    people: int
    det: Detection | None
    boxes: list[np.ndarray]


def _kind(path: Path) -> str:
    return "video" if path.suffix.lower() in VIDEO_EXTS else "image"


def _expand(paths: list[str]) -> tuple[list[_Item], list[str]]:
    """Inputs → items (unique output names) and error lines for paths that do not exist."""
    items: list[_Item] = []
    errors: list[str] = []
    used: set[str] = set()

    def add(p: Path, kind: str) -> None:
        base = p.stem or "input"
        name, k = base, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        items.append(_Item(p, kind, name))

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS + VIDEO_EXTS)
            if not files:
                errors.append(f"{p}: folder holds no images or videos ({', '.join(IMAGE_EXTS + VIDEO_EXTS)})")
            for f in files:
                add(f, _kind(f))
        elif p.is_file():
            add(p, _kind(p))
        else:
            errors.append(f"{p}: no such file or folder")
    return items, errors


def _video_frames(path: Path, max_frames: int | None) -> tuple[Iterator[np.ndarray], int, float]:
    """(RGB frame iterator, frame count estimate, fps); ValueError if the video does not open."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise ValueError(f"video {str(path)!r}: cannot be opened (not a video, missing codec, or corrupt)")
    ok, first = cap.read()
    if not ok or first is None:
        cap.release()
        raise ValueError(f"video {str(path)!r}: opened but no frame could be decoded")
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if max_frames is not None:
        count = min(count, max_frames) if count > 0 else max_frames
    if not np.isfinite(fps) or fps <= 0 or fps > 1000:
        fps = 25.0

    def gen() -> Iterator[np.ndarray]:
        try:
            frame, n = first, 0
            while frame is not None:
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                n += 1
                if max_frames is not None and n >= max_frames:
                    break
                ok, frame = cap.read()
                if not ok:
                    break
        finally:
            cap.release()

    return gen(), max(count, 1), fps


class _Runner:
    """Holds the predictor, options and counters; writes every output file."""

    def __init__(self, args: argparse.Namespace, predictor: Predictor, lifter: Any, out: Path) -> None:
        self.args = args
        self.pred = predictor
        self.lifter = lifter
        self.out = out
        self.K = None if args.intrinsics is None else intrinsics_matrix(args.intrinsics)
        self.failed = 0
        self.done = 0
        self.detect = args.bbox is None and not args.no_detect

    # -- where the people are -----------------------------------------------------------------
    def jobs_for(self, item: _Item, img: np.ndarray, bar: tqdm) -> list[_Job]:
        """The people of one image: the given box, the detected ones, or the whole image."""
        if self.args.bbox is not None:
            return [_Job(item, img, check_bbox(self.args.bbox, img.shape[:2]), 1, 1, None, [])]
        if not self.detect:
            return [_Job(item, img, None, 1, 1, None, [])]
        dets = detect_people(img, max_people=self.args.max_people)
        if not dets:
            tqdm.write(f"{PROG}: {item.path}: no person found; using the whole image", file=sys.stderr)
            return [_Job(item, img, None, 1, 1, None, [])]
        boxes = [d.bbox for d in dets]
        return [_Job(item, img, d.bbox, k + 1, len(dets), d, boxes) for k, d in enumerate(dets)]

    # -- one prediction → files -----------------------------------------------------------------
    def record(self, res: PosePrediction, source: Path, frame: int | None, job: _Job | None = None) -> dict[str, Any]:
        d = res.to_json()
        if job is not None:
            d["person"], d["people"] = job.person, job.people
            d["detection_score"] = None if job.det is None else round(job.det.score, 4)
            if job.det is not None:
                d["bbox_source"] = "detected"
        head = {
            "schema": SCHEMA,
            "source": str(source),
            "frame": frame,
            "checkpoint": str(self.args.checkpoint),
            "stage": self.pred.stage,
            "d2": self.pred.d2,
        }
        d = {**head, **d}
        if self.lifter is not None:
            lifted = lift_2d(self.lifter, res.joints_2d_stage1[None])[0]
            res.extra["lifted_3d_mm"] = lifted
            d["lifter"] = str(self.args.lifter)
            d["lifted_3d_mm"] = np.round(np.asarray(lifted, np.float64), 4).tolist()
        return d

    def picture(self, img: np.ndarray, res: PosePrediction, label: str,
                other_boxes: list[np.ndarray] | None = None) -> np.ndarray:
        h = self.args.height
        conf = float(np.mean(res.confidence))
        title = f"{label}  {self.pred.stage} {res.method}  conf {conf:.2f}  (L blue / R red)"
        if other_boxes:  # every person found, thin grey; this row's person in the usual colour
            thick = max(1, round(img.shape[0] / h))
            for box in other_boxes:
                img = viz.draw_bbox(img, box, color=(200, 200, 200), thickness=thick)
        top = viz.pose_panel(img, res.joints_2d, res.joints_3d, height=h, title=title,
                             bbox=res.bbox if res.bbox_given else None)
        if self.lifter is None:
            return top
        bottom = viz.pose_panel(img, res.joints_2d_stage1, res.extra["lifted_3d_mm"], height=h,
                                title=f"{label}  stage-1 2D + lifter")
        return viz.vstack_panels([top, bottom])

    def heatmap_picture(self, res: PosePrediction, label: str) -> np.ndarray:
        hm = res.hm2d if res.hm2d.ndim == 3 else res.hm2d.max(axis=1)
        return viz.heatmap_grid(res.crop, hm, res.volume, joints_crop=res.decodings[res.method]["joints_crop"],
                                depth_centers_mm=self.pred.depth_bin_centers(), title=label)

    @staticmethod
    def write_json(path: Path, d: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "w") as fh:
            json.dump(d, fh, indent=1, allow_nan=False)
        os.replace(tmp, path)

    # -- images -----------------------------------------------------------------------------
    def run_images(self, items: list[_Item], bar: tqdm) -> None:
        pending: list[_Job] = []
        for item in items:
            try:
                pending.extend(self.jobs_for(item, load_image(item.path), bar))
            except (ValueError, RuntimeError) as exc:
                self.fail(item.path, exc, bar)
                continue
            if len(pending) >= self.args.batch_size:  # an image's people stay in one flush
                self.flush_images(pending, bar)
                pending = []
        if pending:
            self.flush_images(pending, bar)

    def _predict(self, imgs: list[np.ndarray], bboxes: list[np.ndarray | None] | None = None) -> list[PosePrediction]:
        n = len(imgs)
        if bboxes is None and self.args.bbox is not None:
            bboxes = [self.args.bbox] * n
        return self.pred.predict_batch(
            imgs,
            bboxes=bboxes,
            Ks=None if self.K is None else [self.K] * n,
            root_depths=None if self.args.root_depth is None else [self.args.root_depth] * n,
            return_heatmaps=self.args.heatmaps,
        )

    def flush_images(self, pending: list[_Job], bar: tqdm) -> None:
        try:
            results = self._predict([j.img for j in pending], [j.bbox for j in pending])
        except (ValueError, RuntimeError) as exc:
            items = list(dict.fromkeys(id(j.item) for j in pending))
            if len(items) == 1:
                self.fail(pending[0].item.path, exc, bar)
                return
            for key in items:  # isolate the bad image
                self.flush_images([j for j in pending if id(j.item) == key], bar)
            return
        by_item: dict[int, list[tuple[_Job, PosePrediction]]] = {}
        for job, res in zip(pending, results, strict=True):
            by_item.setdefault(id(job.item), []).append((job, res))
        for people in by_item.values():
            item = people[0][0].item
            try:
                rows = []
                for job, res in people:
                    suffix = "" if job.person == 1 else f"_person{job.person}"
                    self.write_json(self.out / f"{item.name}{suffix}.json", self.record(res, item.path, None, job))
                    label = item.path.name if job.people == 1 else f"{item.path.name} person {job.person}/{job.people}"
                    rows.append(self.picture(job.img, res, label, [b for b in job.boxes if b is not job.bbox]))
                    if self.args.heatmaps:
                        viz.save_png(self.out / f"{item.name}{suffix}_heatmaps.png", self.heatmap_picture(res, label))
                viz.save_png(self.out / f"{item.name}.png", rows[0] if len(rows) == 1 else viz.vstack_panels(rows))
                self.done += 1
                bar.update(1)
            except (ValueError, OSError) as exc:
                self.fail(item.path, exc, bar)

    # -- videos -----------------------------------------------------------------------------
    def run_video(self, item: _Item, bar: tqdm) -> None:
        try:
            frames, count, fps = _video_frames(item.path, self.args.max_frames)
        except ValueError as exc:
            self.fail(item.path, exc, bar)
            return
        bar.total = (bar.total or 0) + count - 1
        bar.refresh()
        writer = None
        size = None
        mp4 = self.out / f"{item.name}.mp4"
        fdir = self.out / item.name
        n_ok = 0
        self.no_person = 0
        try:
            batch: list[tuple[int, np.ndarray]] = []
            for i, frame in enumerate(frames):
                if i == 0 and self.args.bbox is not None:
                    check_bbox(self.args.bbox, frame.shape[:2])
                batch.append((i, frame))
                if len(batch) < self.args.batch_size:
                    continue
                writer, size = self._video_batch(item, batch, fdir, mp4, writer, size, fps, bar)
                n_ok += len(batch)
                batch = []
            if batch:
                writer, size = self._video_batch(item, batch, fdir, mp4, writer, size, fps, bar)
                n_ok += len(batch)
        except (ValueError, RuntimeError, OSError) as exc:
            self.fail(item.path, exc, bar)
            return
        finally:
            if writer is not None:
                writer.release()
        if self.no_person:
            tqdm.write(f"{PROG}: {item.path}: no person found in {self.no_person} of {n_ok} frames; "
                       "used the whole frame there", file=sys.stderr)
        self.done += 1

    def _video_batch(self, item, batch, fdir, mp4, writer, size, fps, bar):
        jobs: list[_Job | None] = [None] * len(batch)
        if self.detect:
            for k, (_, frame) in enumerate(batch):
                dets = detect_people(frame, max_people=1)
                self.no_person += not dets
                jobs[k] = _Job(item, frame, dets[0].bbox if dets else None, 1, 1, dets[0] if dets else None, [])
        results = self._predict([f for _, f in batch], [j.bbox for j in jobs] if self.detect else None)
        for (i, frame), res, job in zip(batch, results, jobs, strict=True):
            self.write_json(fdir / f"frame_{i:06d}.json", self.record(res, item.path, i, job))
            pic = self.picture(frame, res, f"{item.path.name} #{i}")
            if self.args.heatmaps:
                viz.save_png(fdir / f"frame_{i:06d}_heatmaps.png", self.heatmap_picture(res, f"{item.path.name} #{i}"))
            if writer is None:
                size = (pic.shape[1] + pic.shape[1] % 2, pic.shape[0] + pic.shape[0] % 2)
                mp4.parent.mkdir(parents=True, exist_ok=True)
                writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
                if not writer.isOpened():
                    raise OSError(f"{mp4}: cannot open an mp4v video writer")
            if (pic.shape[1], pic.shape[0]) != size:
                pic = cv2.resize(pic, size, interpolation=cv2.INTER_AREA)
            writer.write(cv2.cvtColor(pic, cv2.COLOR_RGB2BGR))
            bar.update(1)
        return writer, size

    def fail(self, path: Path, exc: BaseException, bar: tqdm | None = None) -> None:
        self.failed += 1
        msg = str(exc)
        _err(msg if str(path) in msg else f"{path}: {msg}")
        if bar is not None:
            bar.update(1)


def main(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        _err(f"--batch-size: expected >= 1, got {args.batch_size}")
        return 2
    if args.max_people < 1:
        _err(f"--max-people: expected >= 1, got {args.max_people}")
        return 2
    if args.height < 16:
        _err(f"--height: expected >= 16, got {args.height}")
        return 2
    if args.root_depth is not None and not (np.isfinite(args.root_depth) and args.root_depth > 0):
        _err(f"--root-depth: expected a positive depth in mm, got {args.root_depth}")
        return 2
    if args.intrinsics is not None:
        try:
            intrinsics_matrix(args.intrinsics)
        except ValueError as exc:
            _err(f"--intrinsics: {exc}")
            return 2
    try:
        predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, method=args.method,
                                              batch_size=args.batch_size, flip_test=args.flip_test)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        _err(f"--checkpoint {args.checkpoint}: {exc}")
        return 2
    lifter = None
    if args.lifter is not None:
        try:
            lifter = load_lifter(args.lifter)
        except Exception as exc:  # any load failure is one line (pickle, state dict, config)
            _err(f"--lifter {args.lifter}: {exc}")
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    items, errors = _expand(args.paths)
    runner = _Runner(args, predictor, lifter, out)
    for e in errors:
        _err(e)
    runner.failed += len(errors)
    images = [it for it in items if it.kind == "image"]
    videos = [it for it in items if it.kind == "video"]
    with tqdm(total=len(images) + len(videos), unit="img", desc=PROG, disable=args.no_progress,
              file=sys.stderr) as bar:
        runner.run_images(images, bar)
        for v in videos:
            runner.run_video(v, bar)
    total = runner.done + runner.failed
    print(f"{PROG}: {runner.done} of {total} inputs done, {runner.failed} failed; outputs in {out}",
          file=sys.stderr)
    return 1 if runner.failed else 0
