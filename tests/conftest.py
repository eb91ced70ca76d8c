"""Shared pytest fixtures (generic: paths, subprocess environment, scratch copies, tiny data).

- ``repo_root``: the repository root (Path).
- ``cli_env``: environment for subprocesses: the running interpreter's ``bin`` first on PATH (so
  ``python``, ``dvc``, ``ray``, ``pose`` are this venv's), one consistent Ray auth mode, no usage
  stats, no inherited ``RAY_ADDRESS`` (tests never attach to a cluster by accident).
- ``run_cli``: ``run_cli(argv, cwd=..., timeout=...)`` → CompletedProcess (text, captured); past the
  timeout an AssertionError carrying the ends of the process's stdout and stderr and the busiest
  processes of the machine.
- ``scratch_repo``: ``scratch_repo()`` → a fresh git repository holding a copy of the working tree
  (tracked + untracked, not ignored files; no outputs/ or .venv), one commit made.
- ``micro_packed``: session-wide tiny packed dataset (``pose synth`` + ``pose prepare``) → the folder
  holding ``train/`` and ``test/``.
- ``free_port``: ``free_port()`` → an unused TCP port on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_AUTH_MODE"] = env.get("RAY_AUTH_MODE", "disabled")
    env["PYTHONUNBUFFERED"] = "1"
    env["MPLBACKEND"] = "Agg"
    for k in ("RAY_ADDRESS", "POSE_ROOT", "POSE_STORAGE_PATH"):
        env.pop(k, None)
    return env


@pytest.fixture(scope="session")
def run_cli(cli_env) -> Callable[..., subprocess.CompletedProcess]:
    def run(argv: list[str], cwd: str | Path | None = None, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                [str(a) for a in argv], cwd=str(cwd or REPO), env={**cli_env, **(env or {})},
                capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:  # show what it was doing, not only the command
            out, err = (_tail(exc.output), _tail(exc.stderr))
            raise AssertionError(f"{' '.join(map(str, argv))} still running after {timeout:g} s\n"
                                 f"--- stdout (end) ---\n{out}\n--- stderr (end) ---\n{err}\n"
                                 f"--- busiest processes ---\n{_top_processes()}") from None

    return run


def _tail(text: str | bytes | None, n: int = 4000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-n:]


def _top_processes(n: int = 15) -> str:
    """``ps`` lines of the ``n`` processes using most CPU, with their niceness (Ray workers run at
    nice 15, so a busy process at nice 0 starves them)."""
    try:
        r = subprocess.run(["ps", "-eo", "pid,ni,pcpu,etime,args", "--sort=-pcpu"], capture_output=True,
                           text=True, timeout=30)
        return "\n".join(line[:200] for line in r.stdout.splitlines()[: n + 1])
    except (OSError, subprocess.SubprocessError) as exc:
        return f"(ps failed: {exc})"


def _copy_tree(dst: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for rel in files:
        if not rel:
            continue
        src = REPO / rel
        if not src.is_file():  # deleted in the working tree
            continue
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out)


@pytest.fixture
def scratch_repo(tmp_path_factory, cli_env) -> Callable[[], Path]:
    def make() -> Path:
        dst = tmp_path_factory.mktemp("repo")
        _copy_tree(dst)
        git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
        subprocess.run(["git", "init", "-q"], cwd=dst, check=True, env=cli_env)
        subprocess.run(git + ["add", "-A"], cwd=dst, check=True, env=cli_env)
        subprocess.run(git + ["commit", "-q", "-m", "scratch copy"], cwd=dst, check=True, env=cli_env)
        return dst

    return make


@pytest.fixture(scope="session")
def micro_packed(tmp_path_factory, cli_env) -> Path:
    base = tmp_path_factory.mktemp("micro_data")
    pose = [sys.executable, "-m", "pose.tools.cli"]
    for argv in (
        pose + ["synth", "--out", str(base / "raw"), "--frames", "48", "--seed", "0", "--quiet"],
        pose + ["prepare", str(base / "raw"), "--out", str(base / "packed"), "--on-bad", "skip", "--workers", "1"],
    ):
        r = subprocess.run(argv, cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{' '.join(argv)} failed:\n{r.stdout}\n{r.stderr}"
    return base / "packed"


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    def get() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    return get
