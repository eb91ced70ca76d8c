"""Test helper: reading wandb offline runs back (the ``.wandb`` transaction log of ``offline-run-*`` folders).

wandb writes offline runs under ``$WANDB_DIR/wandb/offline-run-<time>-<id>/run-<id>.wandb``; the
log is read with wandb's own ``wandb leet inspect --json`` (one JSON record a line), so what we
read back is exactly what ``wandb sync`` would upload.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["offline_runs", "read_offline_run"]


def offline_runs(wandb_dir: str | Path) -> list[Path]:
    """Offline run folders under ``wandb_dir`` (the folder holding ``wandb/``, or ``wandb/`` itself)."""
    root = Path(wandb_dir)
    if (root / "wandb").is_dir():
        root = root / "wandb"
    return sorted(p for p in root.glob("offline-run-*") if p.is_dir())


def _wandb_cli() -> str:
    exe = Path(sys.executable).with_name("wandb")
    return str(exe) if exe.exists() else (shutil.which("wandb") or "wandb")


def read_offline_run(run_dir: str | Path, timeout: float = 60.0) -> dict[str, Any]:
    """Config, group, project and per-step history of one offline run.

    Returns ``{"run_id", "project", "group", "job_type", "name", "config": dict, "history": [dict per
    logged step], "artifacts": [{"name", "type", "files"}], "media": [file paths under media/],
    "summary": dict}``.
    """
    run_dir = Path(run_dir)
    logs = list(run_dir.glob("run-*.wandb"))
    if not logs:
        raise FileNotFoundError(f"{run_dir}: no run-*.wandb transaction log")
    out = subprocess.run(
        [_wandb_cli(), "leet", "inspect", "--json", str(logs[0])],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"wandb leet inspect {logs[0]} failed: {out.stderr.strip()[-300:]}")
    run: dict[str, Any] = {"run_id": None, "project": None, "group": None, "job_type": None, "name": None,
                           "config": {}, "history": [], "artifacts": [], "media": [], "summary": {}}
    for line in out.stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        kind = rec.get("type")
        if kind == "run":
            r = rec["run"]
            run["run_id"], run["project"], run["group"] = r.get("run_id"), r.get("project"), r.get("run_group")
            run["job_type"], run["name"] = r.get("job_type"), r.get("display_name")
            run["config"].update((r.get("config") or {}).get("update", {}))
        elif kind == "config":
            run["config"].update((rec["config"] or {}).get("update", {}))
        elif kind == "history":
            run["history"].append(rec["history"]["item"])
        elif kind == "summary":
            run["summary"].update((rec["summary"] or {}).get("update", {}))
        elif kind == "artifact":
            a = rec["artifact"]
            run["artifacts"].append({"name": a.get("name"), "type": a.get("type"),
                                     "files": [c.get("path") for c in (a.get("manifest") or {}).get("contents", [])]})
        elif kind == "files":
            run["media"] += [f["path"] for f in (rec["files"] or {}).get("files", []) if f["path"].startswith("media/")]
    run["config"].pop("_wandb", None)
    return run
