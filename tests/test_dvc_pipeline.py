"""dvc.yaml: structure checks, and an end-to-end `dvc repro` of the micro profile in a scratch repo."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workflows.config import load_config, make_profile, write_config


def _dvc(run_cli, repo: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    dvc = Path(sys.executable).parent / "dvc"
    return run_cli([dvc, *args], cwd=repo, timeout=timeout)


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _dvc_params(dvc: dict) -> set[str]:
    """Every stages.yaml key that dvc.yaml's stages name as params (foreach ${key} expanded)."""
    keys: set[str] = set()
    for stage in dvc["stages"].values():
        body, items = (stage["do"], list(stage["foreach"])) if "foreach" in stage else (stage, [None])
        for entry in body.get("params", []):
            for name in entry.get("stages.yaml", []) if isinstance(entry, dict) else [entry]:
                keys.update(name.replace("${key}", str(item)) for item in items)
    return keys


def _missing(cfg: dict, keys: set[str]) -> list[str]:
    """The dotted ``keys`` absent from the mapping ``cfg``."""
    out = []
    for key in sorted(keys):
        node = cfg
        for part in key.split("."):
            if not (isinstance(node, dict) and part in node):
                out.append(key)
                break
            node = node[part]
    return out


@pytest.mark.parametrize("name", ["default", "full", "micro"])
def test_every_dvc_param_is_in_each_profile(repo_root, name, tmp_path):
    """DVC refuses a stage whose params key is absent from stages.yaml ("Parameters ... are missing"):
    the filled-in profile, the file ``python -m workflows.config --profile NAME --write`` writes (the
    profile's own compact text) and the committed stages.yaml hold every key dvc.yaml names."""
    from workflows.config import main

    keys = _dvc_params(yaml.safe_load((repo_root / "dvc.yaml").read_text()))
    assert {"data.synth_tilt", "data.real_test", "data.train_limit", "train.d2_64", "seed"} <= keys
    assert _missing(make_profile(name), keys) == []
    assert main(["--profile", name, "--write", str(tmp_path / "stages.yaml")]) == 0
    assert _missing(yaml.safe_load((tmp_path / "stages.yaml").read_text()), keys) == [], f"profile {name}"
    assert _missing(yaml.safe_load((repo_root / "stages.yaml").read_text()), keys) == []


def test_dvc_yaml_matches_stages_yaml(repo_root):
    dvc = yaml.safe_load((repo_root / "dvc.yaml").read_text())
    cfg = load_config(repo_root / "stages.yaml")
    items = dvc["stages"]["train"]["foreach"]
    assert list(items) == list(cfg["train"])
    for key, item in items.items():
        st = cfg["train"][key]
        assert item["d2"] == st["d2"]
        want = "outputs/data/packed" if st["init"] is None else f"outputs/stages/{st['init']}/model.pt"
        assert item["init"] == want, key
    do = dvc["stages"]["train"]["do"]
    assert do["cmd"] == "python -m workflows.stage --d2 ${item.d2}"  # fixed: launcher chosen by env vars
    assert "${item.init}" in do["deps"]
    params = do["params"][0]["stages.yaml"]
    assert "train.${key}" in params and "train" not in params and "ray" not in params
    ev = dvc["stages"]["evaluate"]
    for key in cfg["train"]:
        assert f"outputs/stages/{key}/model.pt" in ev["deps"]
    assert dvc["stages"]["lift_supervised"]["cmd"] == "python -m workflows.lift --mode supervised"
    assert dvc["stages"]["lift_unsupervised"]["cmd"] == "python -m workflows.lift --mode unsupervised"


# Run in a fresh interpreter from the repository root: import the entry modules, then follow every
# import statement of every project module loaded (at any depth, so imports inside functions count;
# a module's lazy ``__getattr__`` is followed through the names other modules import from it) until
# nothing new loads; print the project files in sys.modules.
_CODE_CLOSURE = r"""
import ast, importlib, importlib.util, json, sys
from pathlib import Path

ROOT = Path.cwd().resolve()
sys.path.insert(0, str(ROOT))


def project_file(mod):
    f = getattr(mod, "__file__", None)
    p = Path(f).resolve() if f else None
    return p if p and p.is_file() and p.is_relative_to(ROOT) and ".venv" not in p.parts else None


def imports_of(path, package):
    tree = ast.parse(path.read_text())
    tree.body = [n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name == "__getattr__")]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((a.name, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            yield base, [a.name for a in node.names]


def load(name, names):
    top = name.split(".")[0]
    if importlib.util.find_spec(top) is None or project_file(importlib.import_module(top)) is None:
        return
    mod = importlib.import_module(name)
    for n in names:
        if hasattr(mod, "__path__") and importlib.util.find_spec(f"{name}.{n}") is not None:
            importlib.import_module(f"{name}.{n}")
        else:
            getattr(mod, n, None)


for entry in sys.argv[1:]:
    importlib.import_module(entry)
seen = set()
while todo := [(n, m) for n, m in list(sys.modules.items()) if n not in seen and project_file(m)]:
    for name, mod in todo:
        seen.add(name)
        package = name if hasattr(mod, "__path__") else name.rpartition(".")[0]
        for target, names in imports_of(project_file(mod), package):
            load(target, names)
files = {str(project_file(m).relative_to(ROOT)) for m in list(sys.modules.values()) if project_file(m)}
print(json.dumps(sorted(files)))
"""


def _stage_entries(dvc: dict) -> dict[str, tuple[str, list[str]]]:
    """{stage: (entry module, deps)} for every stage of dvc.yaml (a foreach stage once, by its name)."""
    out = {}
    for name, stage in dvc["stages"].items():
        body = stage["do"] if "foreach" in stage else stage
        m = re.match(r"python -m (workflows\.\w+)\b", body["cmd"])
        assert m, f"{name}: cmd {body['cmd']!r} does not run a workflows module (python -m workflows.<name>)"
        out[name] = (m.group(1), [str(d) for d in body["deps"]])
    return out


def uncovered(files: list[str], deps: list[str]) -> list[str]:
    """The files no dep names, itself or as a folder above it."""
    return [f for f in files if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)]


def test_every_stage_depends_on_the_code_it_runs(repo_root, run_cli):
    """A change of any project file a stage runs must make `dvc status` call that stage changed."""
    stages = _stage_entries(yaml.safe_load((repo_root / "dvc.yaml").read_text()))
    closures: dict[str, list[str]] = {}
    for name, (entry, deps) in stages.items():
        if entry not in closures:
            r = run_cli([sys.executable, "-c", _CODE_CLOSURE, entry], cwd=repo_root, timeout=300)
            assert r.returncode == 0, r.stderr[-3000:]
            closures[entry] = json.loads(r.stdout)
        files = closures[entry]
        assert f"{entry.replace('.', '/')}.py" in files and "pose/skeleton.py" in files
        missing = uncovered(files, deps)
        assert missing == [], f"dvc.yaml stage {name}: add to its deps the project code it runs: {missing}"
        code_deps = [d for d in deps if d.startswith(("pose/", "workflows/"))]
        assert [d for d in code_deps if not (repo_root / d).exists()] == [], f"{name}: a code dep does not exist"
        extra = [d for d in code_deps if d.endswith(".py") and d not in files]
        assert extra == [], f"dvc.yaml stage {name}: deps on code it never runs (a change would rerun it): {extra}"
    # the check can fail: the train stages without pose/camera.py (as they once were), the evaluate
    # stage without the whole data package
    train_files, train_deps = closures["workflows.stage"], stages["train"][1]
    assert uncovered(train_files, [d for d in train_deps if d != "pose/camera.py"]) == ["pose/camera.py"]
    drawing = {"pose/viz.py", "workflows/gallery.py", "workflows/report_html.py"}
    assert drawing.isdisjoint(train_files) and drawing.isdisjoint(closures["workflows.lift"])
    eval_files = closures["workflows.evaluate"]
    assert {"pose/viz.py", "pose/data/dataset.py", "pose/model.py"} <= set(eval_files)
    assert "pose/lifting/data.py" in closures["workflows.lift"] and "pose/data/synth/cli.py" in closures["workflows.data"]


def test_dvc_dag_lists_the_chain(run_cli, repo_root):
    r = _dvc(run_cli, repo_root, "stage", "list", timeout=120)
    assert r.returncode == 0, r.stderr
    names = [ln.split()[0] for ln in r.stdout.splitlines() if ln.strip()]
    assert names[:2] == ["synth", "prepare"] and {"real_split", "heldout_split"} <= set(names)
    assert [n for n in names if n.startswith("train@")] == [f"train@d2_{d:02d}" for d in (2, 4, 8, 16, 32, 64)]
    assert {"evaluate", "lift_supervised", "lift_unsupervised"} <= set(names)


@pytest.mark.slow
def test_micro_repro_then_param_change_reruns_downstream_only(run_cli, scratch_repo):
    repo = scratch_repo()
    write_config(make_profile("micro"), repo / "stages.yaml")
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qam", "micro profile"],
                   cwd=repo, check=True)

    r = _dvc(run_cli, repo, "repro")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-4000:]
    ran = _ran(r.stdout)
    expected_all = {"synth", "prepare", "real_split", "heldout_split", "evaluate", "lift_supervised", "lift_unsupervised"} | {
        f"train@d2_{d:02d}" for d in (2, 4, 8, 16, 32, 64)}
    assert ran == expected_all
    for key in ("d2_02", "d2_64"):
        for name in ("model.pt", "metrics.json", "curve.csv"):
            assert (repo / "outputs" / "stages" / key / name).is_file()
    ev = json.loads((repo / "outputs" / "eval" / "metrics.json").read_text())
    assert set(ev["stages"]) == {f"d2_{d:02d}" for d in (2, 4, 8, 16, 32, 64)}
    assert ev["baseline_mean_pose"]["mpjpe"]["full"] > 0
    for png in ("mpjpe_per_stage.png", "training_curves.png"):
        assert (repo / "outputs" / "eval" / png).stat().st_size > 1000
    report = (repo / "outputs" / "eval" / "report.md").read_text()
    assert "| d2_64 | 64 |" in report
    # the real-pose split: evaluated beside the embedded one (micro: max_samples of its 394 poses)
    assert ev["real"]["num_test"] == 16 and set(ev["real"]["stages"]) == set(ev["stages"])
    assert ev["real"]["baseline_mean_pose"]["mpjpe"]["full"] > 0
    assert set(ev["real"]["stages"]["d2_64"]["groups"]) == {"torso", "arms", "legs"}
    assert "## Real-pose split" in report and "| real poses | d2_64 |" in report
    # the held-out-looks split: the same poses in other looks, so the same ground truth and mean-pose baseline
    assert ev["heldout"]["num_test"] == 16 and set(ev["heldout"]["stages"]) == set(ev["stages"])
    assert ev["heldout"]["baseline_mean_pose"]["mpjpe"]["full"] == ev["real"]["baseline_mean_pose"]["mpjpe"]["full"]
    assert ev["heldout"]["stages"]["d2_64"]["mpjpe_argmax"]["full"] != ev["real"]["stages"]["d2_64"]["mpjpe_argmax"]["full"]
    assert "## Held-out-looks split" in report and "| held-out looks | d2_64 |" in report

    r = _dvc(run_cli, repo, "metrics", "show", "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    shown = json.dumps(json.loads(r.stdout))
    assert "outputs/eval/metrics.json" in shown and "outputs/stages/d2_16/metrics.json" in shown
    r = _dvc(run_cli, repo, "plots", "show", "-o", str(repo / "dvc_plots"), timeout=300)
    assert r.returncode == 0, r.stderr
    assert (repo / "dvc_plots" / "index.html").is_file()

    r = _dvc(run_cli, repo, "status", timeout=300)
    assert r.returncode == 0 and "up to date" in r.stdout, r.stdout

    cfg_keys = list(load_config(repo / "stages.yaml")["train"])

    # Change one stage's parameter: only that stage and what depends on it run again.
    subprocess.run(["git", "add", "dvc.lock"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "lock"], cwd=repo, check=True)
    r = _dvc(run_cli, repo, "exp", "run", "--set-param", "stages.yaml:train.d2_32.lr=0.001")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-4000:]
    assert _ran(r.stdout) == {"train@d2_32", "train@d2_64", "evaluate"}, r.stdout[-4000:]
    assert load_config(repo / "stages.yaml")["train"]["d2_32"]["lr"] == pytest.approx(1e-3)

    # A code change makes exactly the stages that run that code out of date (dvc status, no rerun):
    # the stages whose entry module imports the file (at any depth), as the closure finds them.
    entries = _stage_entries(yaml.safe_load((repo / "dvc.yaml").read_text()))
    closures = {e: set(json.loads(run_cli([sys.executable, "-c", _CODE_CLOSURE, e], cwd=repo, timeout=300).stdout))
                for e in {e for e, _ in entries.values()}}
    train_and_after = {f"train@d2_{d:02d}" for d in (2, 4, 8, 16, 32, 64)} | {"evaluate"}
    for path, least in (("pose/lifting/data.py", {"lift_supervised", "lift_unsupervised"}),
                        ("pose/data/dataset.py", train_and_after),
                        ("pose/camera.py", train_and_after | {"prepare"}),
                        ("pose/viz.py", {"evaluate"}),  # a plot's code: no training stage reruns
                        ("workflows/gallery.py", {"evaluate"})):
        stages = {f"{name}@{k}" if name == "train" else name for name, (e, _) in entries.items() if path in closures[e]
                  for k in (cfg_keys if name == "train" else [None])}
        assert least <= stages, (path, stages)
        if "viz" in path or "gallery" in path:
            assert not any(s.startswith(("train@", "lift")) for s in stages), (path, stages)
        before = (repo / path).read_text()
        (repo / path).write_text(before + "# a comment\n")
        r = _dvc(run_cli, repo, "status", "--json", timeout=300)
        (repo / path).write_text(before)
        assert r.returncode == 0, r.stderr
        changed = {name for name, entries in json.loads(r.stdout).items()
                   if any(path in e.get("changed deps", {}) for e in entries if isinstance(e, dict))}
        assert changed == stages, path
