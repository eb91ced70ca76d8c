"""Helpers shared by the workflow scripts: project paths, Ray start-up, error reporting, publishing.

Paths: every output lives under ``<root>/outputs`` where ``root`` is ``--root``, else the
environment variable ``POSE_ROOT``, else the current directory, always made **absolute** — under
``ray job submit --working-dir .`` the script runs in an uploaded copy of the repository, so the
outputs must be addressed by absolute path (pass ``--root $PWD`` or ``POSE_ROOT``).

Ray: :func:`init_ray` connects to ``RAY_ADDRESS`` when it is set (a running cluster, or the cluster a
``ray job submit`` job runs in) and otherwise starts a private local instance
(``address="local"``; a bare ``ray.init()`` would silently attach to any cluster running on the
machine). :func:`ray_env_defaults` sets ``RAY_AUTH_MODE`` (default ``disabled``) and
``RAY_USAGE_STATS_ENABLED=0`` unless already set — use the same ``RAY_AUTH_MODE`` for
``ray start``, ``ray job submit`` and the scripts (a mismatch makes actors "never run" or the job
API answer "Missing authentication token").
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from pose.data.packed import read_meta
from workflows.config import ConfigError

__all__ = [
    "Stopped",
    "UserError",
    "check_capacity",
    "init_ray",
    "outputs_dir",
    "project_root",
    "publish",
    "ray_env_defaults",
    "ray_storage",
    "require_packed",
    "run_cli",
    "shutdown_ray",
]

#: Environment variables forwarded to Ray workers (driver env does not reach a running cluster).
FORWARD_ENV = ("WANDB_MODE", "WANDB_DIR", "WANDB_API_KEY", "WANDB_PROJECT", "POSE_ROOT", "POSE_STORAGE_PATH", "RAY_AUTH_MODE")


class UserError(Exception):
    """A problem with the user's input (config, data, missing checkpoint): printed as one line."""


class Stopped(Exception):
    """The run stopped on request (SIGTERM) after saving a checkpoint: one line, exit code 143."""

    exit_code = 128 + signal.SIGTERM


def project_root(root: str | os.PathLike | None = None) -> Path:
    """Absolute project root: ``root``, else ``$POSE_ROOT``, else the current directory."""
    root = root or os.environ.get("POSE_ROOT") or os.getcwd()
    return Path(root).expanduser().resolve()


def outputs_dir(root: Path, *parts: str) -> Path:
    """``<root>/outputs/<parts...>`` (absolute)."""
    return Path(root, "outputs", *parts)


#: the commands that make the packed splits, named by the error about a missing one
MAKE_PACKED = "`dvc repro prepare`, or `pose synth` + `pose prepare SRC --out DIR`"
MAKE_REAL = "`dvc repro real_split`"
MAKE_HELDOUT = "`dvc repro heldout_split`"


def require_packed(split: Path, made_by: str = MAKE_PACKED) -> dict[str, Any]:
    """``meta.json`` of the packed split in folder ``split`` after checking that every file it lists
    is there at its recorded size (a partial copy stops here); otherwise a :class:`UserError` line
    naming the folder and ``made_by``, the command that makes it."""
    if not (Path(split) / "meta.json").is_file():
        raise UserError(f"prepared data not found: {split}/meta.json (run {made_by})")
    try:
        return read_meta(split)
    except (OSError, ValueError) as exc:
        raise UserError(str(exc)) from None


def publish(files: dict[str, Path | str | bytes], final: Path) -> None:
    """Write ``{name: source path | text | bytes}`` into ``final`` atomically (stage, then rename)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    staging = final.parent / f".{final.name}.tmp-{token}"
    staging.mkdir()
    try:
        for name, src in files.items():
            dst = staging / name
            if isinstance(src, Path):
                shutil.copyfile(src, dst)
            elif isinstance(src, bytes):
                dst.write_bytes(src)
            else:
                dst.write_text(src)
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{token}"
            final.rename(old)
        staging.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def ray_env_defaults() -> None:
    """Consistent Ray environment for scripts and tests (see module docstring)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray Train V2 is the default in 2.60; pin it so behaviour does not change under us.
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


def init_ray(num_cpus: float | None = None, env_vars: Mapping[str, str] | None = None) -> None:
    """Start (or connect to) Ray once; see the module docstring for the address rule."""
    import ray

    ray_env_defaults()
    if ray.is_initialized():
        return
    forwarded = {k: os.environ[k] for k in FORWARD_ENV if k in os.environ}
    forwarded.update(env_vars or {})
    forwarded.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    forwarded.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # else every worker print shows twice
    job_env = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if job_env:
        # Inside `ray job submit`: the job's runtime env (working_dir on every worker's path, its
        # env_vars) is merged with ours by Ray, and a key set by both is an error -> only add new keys.
        try:
            taken = set(json.loads(job_env).get("runtime_env", {}).get("env_vars", {}) or {})
        except (ValueError, AttributeError):
            taken = set()
        forwarded = {k: v for k, v in forwarded.items() if k not in taken}
    else:
        # A driver started from a checkout: workers import `workflows` / `pose` from the repository.
        repo = str(Path(__file__).resolve().parent.parent)
        forwarded["PYTHONPATH"] = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p)
    address = os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict[str, Any] = {
        "address": address,
        "runtime_env": {"env_vars": forwarded} if forwarded else None,
        "log_to_driver": True,
        # A private instance starts the dashboard too: Ray Train's placement-group cleaner polls the
        # State API (served by it) every second and logs a warning each time it is missing.
        "include_dashboard": True if address == "local" else None,
    }
    if address == "local":
        # Private instance sized to the machine (or what the caller asks for).
        kwargs["num_cpus"] = int(num_cpus) if num_cpus else os.cpu_count()
        kwargs["ignore_reinit_error"] = True
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    ray.init(**kwargs)


def check_capacity(need: Mapping[str, float], what: str) -> None:
    """Before :func:`init_ray`: raise :class:`UserError` when ``need`` (e.g. ``{"CPU": 4, "GPU": 0}``)
    exceeds what the private local Ray instance would have (this machine's CPUs and CUDA devices) —
    Ray Train would otherwise wait for the resources for ever. No check when ``RAY_ADDRESS`` names
    a cluster, which may have or add them."""
    if (os.environ.get("RAY_ADDRESS") or "local") != "local":
        return
    total = {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}
    short = {k: v for k, v in need.items() if v > 0 and v > total.get(k, 0) + 1e-9}
    if short:
        hint = "drop --use-gpu" if "CPU" not in short else "lower --num-workers or ray.cpus_per_worker"
        have = ", ".join(f"{v:g} {k} (this machine has {total.get(k, 0):g})" for k, v in short.items())
        raise UserError(f"{what} needs {have}: {hint}, or set RAY_ADDRESS to a cluster that has them")


def ray_storage(root: Path) -> tuple[str, bool]:
    """Ray Train/Tune ``storage_path``: ``$POSE_STORAGE_PATH`` (shared storage or an ``s3://`` URI on a
    multi-node cluster), else ``<root>/outputs/ray``. Returns ``(storage, is_local)``; a local folder
    is made absolute and created."""
    storage = os.environ.get("POSE_STORAGE_PATH") or str(outputs_dir(root, "ray"))
    if "://" in storage:
        return storage, False
    path = Path(storage).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return str(path), True


def shutdown_ray() -> None:
    """Shut down the Ray connection this process started, if any (imports nothing new)."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def run_with_ray(run: Callable[[Any], Any], args: Any) -> int:
    """``run(args)`` of a script that may start Ray, then shut down the Ray this process started."""
    try:
        run(args)
    finally:
        shutdown_ray()
    return 0


def run_cli(main, argv: list[str] | None = None) -> int:
    """Run ``main(argv)`` with unbuffered output; a UserError / ConfigError becomes one ``error:`` line
    on stderr and exit 1, a :class:`Stopped` its line and exit 143."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        return int(main(argv) or 0)
    except (UserError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Stopped as exc:
        print(str(exc), file=sys.stderr)
        return Stopped.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
