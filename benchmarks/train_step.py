"""Benchmark one C2F training step: separable 3D loss (ours) vs the materialised-target baseline.

One step = forward of :class:`pose.model.C2FPoseNet` on a random batch, 2D + 3D heatmap L2 losses
with targets made from joint coordinates on the device, backward, RMSprop step.

- ``ours``:     ``heatmap_l2(hm2d, heatmap_2d(...)) + ratio_3d * volume_l2_separable(vol, coords, ...)``
  (the (B, J, d2, H, W) target is never built).
- ``baseline``: ``heatmap_l2(hm2d, heatmap_2d(...)) + ratio_3d * heatmap_l2(vol, volume_target(...))``.

Each variant runs in a fresh subprocess so that its peak memory is its own: on CPU the peak is the
peak-RSS (``VmHWM``; ``ru_maxrss`` where /proc is missing) increase over the process's RSS just before the first step
(model, optimizer and input already built); on CUDA ``torch.cuda.max_memory_allocated`` over the
allocation before the first step (the peak RSS is reset there through
/proc/self/clear_refs). Throughput is batch / median step time over ``--repeats`` timed
steps (after ``--warmup`` untimed ones). A loss-only timing (loss + backward into a fixed volume,
no network) isolates the part that differs between the variants.

Usage::

    python benchmarks/train_step.py --size tiny --d2 64 --batch 16 --repeats 10 --json out.json
    python benchmarks/train_step.py --size full --d2 64 --batch 2 --repeats 3 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = ("ours", "baseline")
DEFAULT_BATCH = {"micro": 16, "tiny": 16, "full": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=("micro", "tiny", "full"), default="tiny", help="model preset")
    p.add_argument("--d2", type=int, default=64, help="depth bins of the 3D head (>= 1)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: 16 micro/tiny, 2 full)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    p.add_argument("--rounds", type=int, default=1, help="fresh subprocesses per variant, alternated")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU; default torch's)")
    p.add_argument("--norm", choices=("bn", "bn_batchstats", "gn"), default="bn")
    p.add_argument("--input-size", type=int, default=None, help="input crop side (default: the preset's)")
    p.add_argument("--hourglass-residuals", type=int, default=3,
                   help="residual modules per hourglass branch (C2F 3, Newell's original 1)")
    p.add_argument("--sigma-2d", type=float, default=2.0, help="2D gaussian std (heatmap cells)")
    p.add_argument("--ratio-3d", type=float, default=1.0, help="weight of the 3D loss")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: forward under torch.autocast, losses in fp32 (as stages.yaml precision: bf16)")
    p.add_argument("--memory-format", choices=("auto", "contiguous", "channels_last"), default="auto",
                   help="layout of weights and input; auto = as the training loop: channels_last on CPU, "
                        "contiguous on CUDA")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--worker", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.d2 < 1:
        p.error(f"--d2 must be >= 1, got {args.d2}")
    if args.memory_format == "auto":
        import torch

        from workflows.train_loop import memory_format_for

        fmt = memory_format_for(torch.device(args.device))
        args.memory_format = "channels_last" if fmt == torch.channels_last else "contiguous"
    if args.batch is None:
        args.batch = DEFAULT_BATCH[args.size]
    for name in ("batch", "repeats", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB, NaN where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    """Peak RSS (MiB): VmHWM, else ru_maxrss (KiB on Linux, bytes on macOS)."""
    peak = _status_mib("VmHWM")
    if peak == peak:  # not NaN
        return peak
    scale = 1.0 / 2**20 if sys.platform == "darwin" else 1.0 / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def model_config(args: argparse.Namespace):
    """The pose.model.ModelConfig the flags describe (preset, d2, norm, residuals, input size)."""
    from pose.model import ModelConfig

    overrides = {"input_size": args.input_size} if args.input_size else {}
    return ModelConfig.preset(args.size, d2=args.d2, norm=args.norm, hourglass_residuals=args.hourglass_residuals,
                              **overrides)


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Time ``args.worker``'s training step in this process; returns a result dict."""
    import torch

    from pose.losses import heatmap_l2, volume_l2_separable
    from pose.model import C2FPoseNet
    from pose.targets import heatmap_2d, sigma_z_for, volume_target

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch.cuda.is_available() is False")
    torch.manual_seed(0)
    cfg = model_config(args)
    model = C2FPoseNet(cfg).to(device).train()
    if args.memory_format == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.RMSprop(model.parameters(), lr=2.5e-4)
    B, J, S, H, d2 = args.batch, cfg.num_joints, cfg.input_size, cfg.output_size, cfg.d2
    sigma_2d = args.sigma_2d
    sigma_z = sigma_z_for(d2, sigma_2d)
    g = torch.Generator().manual_seed(1)
    images = (torch.rand(B, 3, S, S, generator=g) - 0.5).to(device)
    if args.memory_format == "channels_last":
        images = images.contiguous(memory_format=torch.channels_last)
    coords = torch.rand(B, J, 3, generator=g) * torch.tensor([H - 1.0, H - 1.0, d2 - 1.0])
    coords = coords.to(device)

    def losses(hm2d: torch.Tensor, vol: torch.Tensor) -> torch.Tensor:
        loss_2d = heatmap_l2(hm2d, heatmap_2d(coords[..., :2], H, H, sigma_2d))
        if args.worker == "ours":
            loss_3d = volume_l2_separable(vol, coords, sigma_2d, sigma_z)
        else:
            loss_3d = heatmap_l2(vol, volume_target(coords, d2, H, H, sigma_2d, sigma_z))
        return loss_2d + args.ratio_3d * loss_3d

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            hm2d, vol = model(images)  # as workflows.train_loop.forward, with --memory-format's layout
        loss = losses(hm2d.float(), vol.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    sync()
    peak_was_reset = _reset_peak_rss()
    rss_before = _status_mib("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        alloc_before = torch.cuda.memory_allocated(device)
    for _ in range(args.warmup):
        step()
    times, cpu_times, loss_value = [], [], float("nan")
    for _ in range(args.repeats):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        loss_value = step()
        sync()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    result: dict[str, Any] = {
        "variant": args.worker,
        "step_s": times,
        "step_cpu_s": cpu_times,
        "final_loss": loss_value,
    }
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        result["peak_mem_mib"] = (peak - alloc_before) / 2**20
        result["peak_mem_abs_mib"] = peak / 2**20
        result["mem_kind"] = "cuda max_memory_allocated above the allocation before the first step"
    else:
        peak = _peak_rss_mib()
        result["peak_mem_mib"] = peak - rss_before
        result["peak_mem_abs_mib"] = peak
        result["mem_kind"] = (
            "peak RSS (VmHWM, reset before the first step) above the RSS before the first step"
            if peak_was_reset
            else "peak RSS of the whole process above the RSS before the first step (reset unsupported)"
        )

    # loss only: loss + backward into a fixed prediction volume (no network)
    vol = torch.randn(B, J, d2, H, H, generator=g).mul_(0.01).to(device).requires_grad_(True)
    hm2d = torch.randn(B, J, H, H, generator=g).mul_(0.01).to(device).requires_grad_(True)
    loss_times, loss_cpu_times = [], []
    for i in range(args.warmup + max(args.repeats, 3)):
        vol.grad = hm2d.grad = None
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        losses(hm2d, vol).backward()
        sync()
        if i >= args.warmup:
            loss_times.append(time.perf_counter() - t0)
            loss_cpu_times.append(time.process_time() - c0)
    result["loss_only_s"] = loss_times
    result["loss_only_cpu_s"] = loss_cpu_times
    return result


def aggregate(runs: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    """Medians over all timed steps of all rounds of one variant."""
    steps = [t for r in runs for t in r["step_s"]]
    cpu = [t for r in runs for t in r["step_cpu_s"]]
    loss = [t for r in runs for t in r["loss_only_s"]]
    peaks = [r["peak_mem_mib"] for r in runs]
    return {
        "samples_per_s": batch / statistics.median(steps),
        "samples_per_cpu_s": batch / statistics.median(cpu),
        "step_s_median": statistics.median(steps),
        "step_cpu_s_median": statistics.median(cpu),
        "loss_only_s_median": statistics.median(loss),
        "loss_only_cpu_s_median": statistics.median(t for r in runs for t in r["loss_only_cpu_s"]),
        "peak_mem_mib": statistics.median(peaks),
        "peak_mem_mib_all": peaks,
        "peak_mem_abs_mib": statistics.median(r["peak_mem_abs_mib"] for r in runs),
        "mem_kind": runs[0]["mem_kind"],
        "final_loss": runs[-1]["final_loss"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args)))
        return 0

    import torch


    cfg = model_config(args)
    forwarded = [
        "--size", args.size, "--d2", str(args.d2), "--batch", str(args.batch),
        "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--device", args.device,
        "--norm", args.norm, "--sigma-2d", str(args.sigma_2d), "--ratio-3d", str(args.ratio_3d),
        "--hourglass-residuals", str(args.hourglass_residuals), *(["--input-size", str(args.input_size)] if args.input_size else []),
        "--precision", args.precision, "--memory-format", args.memory_format,
    ]  # fmt: skip
    if args.threads:
        forwarded += ["--threads", str(args.threads)]
    raw: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
    for _ in range(args.rounds):  # alternate the variants so that load drift hits both alike
        for variant in args.variants:
            cmd = [sys.executable, str(Path(__file__).resolve()), *forwarded, "--worker", variant]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr)
                print(f"variant {variant} failed (rc {proc.returncode})", file=sys.stderr)
                return 1
            raw[variant].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    results = {v: aggregate(runs, args.batch) for v, runs in raw.items()}

    threads = args.threads or torch.get_num_threads()
    print(
        f"size={args.size} (features={cfg.features}, input={cfg.input_size}, depth={cfg.hourglass_depth}, residuals={cfg.hourglass_residuals}) "
        f"d2={args.d2} batch={args.batch} device={args.device} precision={args.precision} {args.memory_format} threads={threads} "
        f"rounds={args.rounds} x repeats={args.repeats}"
    )
    print(
        f"{'variant':<10}{'samples/s':>11}{'(CPU-time)':>11}{'step s':>9}{'loss-only s':>13}"
        f"{'peak MiB':>10}{'(min-max)':>16}"
    )
    for name, r in results.items():
        spread = f"({min(r['peak_mem_mib_all']):.0f}-{max(r['peak_mem_mib_all']):.0f})"
        print(
            f"{name:<10}{r['samples_per_s']:>11.2f}{r['samples_per_cpu_s']:>11.2f}{r['step_s_median']:>9.3f}"
            f"{r['loss_only_s_median']:>13.4f}{r['peak_mem_mib']:>10.1f}{spread:>16}"
        )
    summary: dict[str, Any] = {
        "size": args.size,
        "model_config": cfg.to_dict(),
        "d2": args.d2,
        "batch": args.batch,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "device": args.device,
        "precision": args.precision,
        "memory_format": args.memory_format,
        "device_name": (
            torch.cuda.get_device_name()
            if args.device == "cuda" and torch.cuda.is_available()
            else platform.processor()
        ),
        "threads": threads,
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "results": results,
        "raw": raw,
    }
    if {"ours", "baseline"} <= set(results):
        o, b = results["ours"], results["baseline"]
        ratios = {
            "samples_per_s": o["samples_per_s"] / b["samples_per_s"],
            "samples_per_cpu_s": o["samples_per_cpu_s"] / b["samples_per_cpu_s"],
            "peak_mem": o["peak_mem_mib"] / b["peak_mem_mib"] if b["peak_mem_mib"] > 0 else float("nan"),
            "loss_only_time": o["loss_only_s_median"] / b["loss_only_s_median"],
        }
        summary["ratio_ours_over_baseline"] = ratios
        print(
            f"ours/baseline: samples/s x{ratios['samples_per_s']:.2f} (CPU-time x{ratios['samples_per_cpu_s']:.2f}), "
            f"peak memory x{ratios['peak_mem']:.2f}, loss-only time x{ratios['loss_only_time']:.2f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
