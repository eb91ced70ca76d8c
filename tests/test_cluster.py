"""cluster/: every YAML parses, and every entrypoint runs an existing workflow module with flags it accepts."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
YAMLS = sorted(CLUSTER.rglob("*.yaml"))


def _load_all(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _entrypoints() -> list[tuple[Path, str]]:
    found = []
    for path in YAMLS:
        for doc in _load_all(path):
            if isinstance(doc, dict) and doc.get("kind") == "RayJob":
                found.append((path, doc["spec"]["entrypoint"]))
    return found


def _parser_of(script: Path):
    spec = importlib.util.spec_from_file_location(f"_ep_{script.stem}", script)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # as an import does: a module-level dataclass looks itself up there
    spec.loader.exec_module(mod)
    return mod.build_parser()


def test_there_is_a_launcher_kuberay_cluster_and_jobs():
    kinds = {d.get("kind") for p in YAMLS for d in _load_all(p) if isinstance(d, dict)}
    assert {"RayCluster", "RayJob", "PersistentVolumeClaim"} <= kinds
    launcher = [d for p in YAMLS for d in _load_all(p) if isinstance(d, dict) and "available_node_types" in d]
    assert launcher, "no Ray cluster-launcher YAML in cluster/"
    workers = launcher[0]["available_node_types"]
    assert any("g5" in n["node_config"]["InstanceType"] for n in workers.values()), "launcher has no GPU worker"


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_parses(path):
    docs = _load_all(path)
    assert docs, f"{path} is empty"


def test_every_entrypoint_runs_an_existing_script_with_accepted_flags():
    eps = _entrypoints()
    modules = {shlex.split(cmd)[2] for _, cmd in eps}
    assert {"workflows.stage", "workflows.tune"} <= modules
    for path, cmd in eps:
        argv = shlex.split(cmd)
        assert argv[:2] == ["python", "-m"], f"{path}: entrypoint should be `python -m workflows.<name>`: {cmd}"
        script = REPO / (argv[2].replace(".", "/") + ".py")
        assert script.is_file(), f"{path}: {argv[2]} does not exist"
        parser = _parser_of(script)
        try:
            parser.parse_args(argv[3:])
        except SystemExit as exc:  # argparse error: an unknown or malformed flag
            pytest.fail(f"{path}: {argv[2]} rejects the flags of `{cmd}` (exit {exc.code})")


def test_dashboard_and_job_api_are_not_exposed():
    for path in YAMLS:
        for doc in _load_all(path):
            if not isinstance(doc, dict):
                continue
            if doc.get("kind") == "RayCluster":
                assert doc["spec"]["headGroupSpec"]["serviceType"] == "ClusterIP", path
            if "provider" in doc:  # cluster launcher: the security group opens SSH only
                perms = doc["provider"]["security_group"]["IpPermissions"]
                assert [(p["FromPort"], p["ToPort"]) for p in perms] == [(22, 22)], path
    text = "\n".join(p.read_text() for p in YAMLS)
    assert "kind: Ingress" not in text and "LoadBalancer" not in text


def test_runtime_env_and_shared_storage():
    env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    assert env["working_dir"] == "."
    assert any("opencv" in p for p in env["pip"])
    assert env["env_vars"]["POSE_STORAGE_PATH"].startswith(("s3://", "/"))
    rc = next(d for p in YAMLS for d in _load_all(p) if isinstance(d, dict) and d.get("kind") == "RayCluster")
    for group in [rc["spec"]["headGroupSpec"], *rc["spec"]["workerGroupSpecs"]]:
        c = group["template"]["spec"]["containers"][0]
        env_names = {e["name"]: e["value"] for e in c["env"]}
        assert env_names["POSE_STORAGE_PATH"].startswith("/mnt/c2f-runs")
        assert any(m["mountPath"] == "/mnt/c2f-runs" for m in c["volumeMounts"])
