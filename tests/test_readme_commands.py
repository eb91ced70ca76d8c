"""Every command the README shows runs as written: its ```bash blocks, in order, in a scratch copy of
the repository on the micro profile (the default's curriculum would take half an hour), after the
main job's `dvc repro`. A command that cannot run here is listed in SKIPPED with the reason and the
test that covers it instead; a new README command that is in neither list fails the test."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

#: README commands not run here (a prefix of the command as written → why, and what covers it)
SKIPPED = {
    "python3 -m venv .venv && .venv/bin/pip install -e . &&": "the main job's set-up: CI runs it on a fresh clone; "
                                                               "its `dvc repro` runs below",
    "python3 -m venv .venv && .venv/bin/pip install -e \".[test]\"": "the test command: CI runs it (.ci/run)",
    "ray job submit --address http://127.0.0.1:8265": "needs a GPU (--use-gpu); tests/test_ray_cluster.py submits the "
                                                      "same job to a real local cluster",
    "wandb sync outputs/wandb/wandb/offline-run-*": "uploads to wandb.ai (no network here); the offline runs it "
                                                    "reads are checked in tests/test_stage.py",
}
#: README blocks not run here, whole (a prefix of one of their commands → why): recipes for resources
#: this machine lacks, whose commands make sense only together
SKIPPED_BLOCKS = {
    "sed -i 's|^  source: embedded|  source: /data/h36m|'": "the real-Human3.6M recipe: needs the dataset at "
                                                           "/data/h36m (tests/test_data_json.py, test_data_seed_txt.py)",
    "export RAY_ADDRESS=auto": "the multi-node recipe: needs a cluster and shared storage (tests/test_ray_cluster.py)",
}


def readme_blocks(readme: Path) -> list[list[str]]:
    """The commands of each of the README's ```bash blocks: continuation lines joined, comments dropped."""
    blocks = []
    for block in re.findall(r"```bash\n(.*?)```", readme.read_text(), re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        cmds = [re.sub(r"\s+#.*$", "", line).strip() for line in joined.splitlines()]
        blocks.append([c for c in cmds if c and not c.startswith("#")])
    return blocks


def _skip_reason(cmd: str, block: list[str]) -> str | None:
    for prefix, why in SKIPPED_BLOCKS.items():
        if any(c.startswith(prefix) for c in block):
            return why
    return next((why for prefix, why in SKIPPED.items() if cmd.startswith(prefix)), None)


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def test_the_skip_lists_name_commands_the_readme_shows(repo_root):
    cmds = [c for b in readme_blocks(repo_root / "README.md") for c in b]
    assert any(c.startswith("python -m workflows.tune --d2 16 --num-samples 8") for c in cmds)
    unmatched = [p for p in (*SKIPPED, *SKIPPED_BLOCKS) if not any(c.startswith(p) for c in cmds)]
    assert unmatched == [], f"the skip lists name commands the README no longer shows: {unmatched}"


@pytest.mark.slow
def test_the_readme_commands_run_as_written(run_cli, scratch_repo, repo_root):
    repo = scratch_repo()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@e"]
    r = run_cli(["python", "-m", "workflows.config", "--profile", "micro", "--write", "stages.yaml"], cwd=repo)
    assert r.returncode == 0, r.stderr
    subprocess.run(git + ["commit", "-qam", "micro profile"], cwd=repo, check=True)
    r = run_cli(["dvc", "repro"], cwd=repo, timeout=1800)  # the main job's DAG, on the micro profile
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    subprocess.run(["git", "add", "dvc.lock"], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "lock"], cwd=repo, check=True)

    done: list[str] = []
    outputs: dict[str, str] = {}
    for block in readme_blocks(repo_root / "README.md"):
        for cmd in block:
            if _skip_reason(cmd, block) is not None:
                continue
            r = run_cli(["bash", "-c", cmd], cwd=repo, timeout=1800)
            assert r.returncode == 0, f"README command failed: {cmd}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
            outputs[cmd] = r.stdout + r.stderr
            done.append(cmd)

    # what the commands say they do, they did
    exp = next(c for c in outputs if c.startswith("dvc exp run -S 'stages.yaml:++train.d2_16.lr=5e-4'"))
    assert _ran(outputs[exp]) == {"train@d2_16", "train@d2_32", "train@d2_64", "evaluate"}
    assert (repo / "dvc_plots" / "index.html").is_file()
    best = json.loads((repo / "outputs" / "tune" / "d2_16" / "best_params.json").read_text())
    assert len(best["trials"]) == 8
    apply_idx = next(i for i, c in enumerate(done) if c.startswith("python -m workflows.tune --d2 16 --apply"))
    last_repro = done[apply_idx + 1]
    assert last_repro == "dvc repro"
    assert _ran(outputs[last_repro]) == {"train@d2_16", "train@d2_32", "train@d2_64", "evaluate"}

    # the README's inline prediction command, on one of the rendered images
    image = sorted((repo / "outputs" / "data" / "raw" / "images").iterdir())[0]
    r = run_cli(["pose", "predict", image, "--checkpoint", "outputs/stages/d2_64/model.pt", "--out", "preds/"],
                cwd=repo)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (repo / "preds" / f"{image.stem}.json").is_file()
    assert "pose predict IMAGE_OR_FOLDER --checkpoint outputs/stages/d2_64/model.pt --out preds/" in \
        (repo_root / "README.md").read_text()
