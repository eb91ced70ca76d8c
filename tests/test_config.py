"""stages.yaml validation and profiles (workflows/config.py)."""

from __future__ import annotations

import copy
import sys

import pytest
import yaml

from workflows.config import (
    CURRICULUM,
    PROFILES,
    ConfigError,
    load_config,
    make_profile,
    stage_chain,
    stage_key,
    validate,
    write_config,
)


@pytest.fixture
def micro() -> dict:
    return make_profile("micro")


def _err(cfg: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate(cfg, "stages.yaml")
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_committed_stages_yaml_is_valid(repo_root):
    cfg = load_config(repo_root / "stages.yaml")
    assert [v["d2"] for v in cfg["train"].values()] == list(CURRICULUM)
    assert cfg["data"]["source"] == "embedded"
    assert set(cfg["lift"]) == {"supervised", "unsupervised"}
    assert cfg["tune"]["stage"] in cfg["train"]


@pytest.mark.parametrize("name", PROFILES)
def test_profiles_validate_and_chain(name, tmp_path):
    cfg = make_profile(name)
    assert list(cfg["train"]) == [stage_key(d) for d in CURRICULUM]
    assert stage_chain(validate(cfg), "d2_64") == [stage_key(d) for d in CURRICULUM]
    path = write_config(cfg, tmp_path / "stages.yaml")
    again = load_config(path)
    assert again["profile"] == name
    assert again["train"]["d2_16"]["lr"] == pytest.approx(cfg["train"]["d2_16"]["lr"])


def test_full_profile_maps_seed_ratios():
    cfg = validate(make_profile("full"))
    # Caffe sum-reduction ratios 0.1/0.3/0.1/0.03 times d2 (pose/losses.py docstring table)
    got = {v["d2"]: v["ratio_3d"] for v in cfg["train"].values()}
    assert got == pytest.approx({2: 0.2, 4: 1.2, 8: 0.8, 16: 0.48, 32: 0.96, 64: 1.92})
    assert {v["optimizer"] for v in cfg["train"].values()} == {"rmsprop"}
    assert cfg["train"]["d2_64"]["heatmap2_std"] == pytest.approx(3e-4)
    assert cfg["model"]["preset"] == "full" and cfg["ray"]["use_gpu"] is True


def test_defaults_filled(micro):
    cfg = validate(micro)
    st = cfg["train"]["d2_02"]
    assert st["integral_weight"] == 1.0 and st["grad_clip"] is None and st["epochs"] is None


def test_unknown_key(micro):
    micro["train"]["d2_16"]["lr_rate"] = 0.1
    assert "train.d2_16.lr_rate: unknown key" in _err(micro)


def test_unknown_top_level_and_model_key(micro):
    bad = copy.deepcopy(micro)
    bad["trian"] = {}
    assert "stages.yaml: trian: unknown key" in _err(bad)
    micro["model"]["width"] = 3
    assert "model.width: unknown key" in _err(micro)


def test_non_increasing_d2(micro):
    micro["train"]["d2_08"]["d2"] = 2
    assert "train.d2_08.d2: must match the stage key" in _err(micro)
    cfg = make_profile("micro")
    order = ["d2_02", "d2_08", "d2_04", "d2_16", "d2_32", "d2_64"]
    cfg["train"] = {k: cfg["train"][k] for k in order}
    cfg["train"]["d2_08"]["init"] = "d2_02"
    cfg["train"]["d2_04"]["init"] = "d2_08"
    assert "train.d2_04.d2: d2 must increase along the curriculum (8 -> 4)" in _err(cfg)


def test_negative_lr(micro):
    micro["train"]["d2_32"]["lr"] = -1e-3
    assert _err(micro) == "stages.yaml: train.d2_32.lr: must be > 0, got -0.001"


def test_precision(micro):
    assert validate(micro)["train"]["d2_08"]["precision"] == "fp32"  # the default
    micro["train"]["d2_08"]["precision"] = "bf16"
    assert validate(micro)["train"]["d2_08"]["precision"] == "bf16"
    micro["train"]["d2_08"]["precision"] = "fp16"
    msg = _err(micro)
    assert msg.startswith("stages.yaml: train.d2_08.precision:") and "fp32" in msg and "bf16" in msg


def test_lr_written_without_dot_is_a_number(micro, tmp_path):
    micro["train"]["d2_32"]["lr"] = "1e-4"  # what YAML 1.1 makes of `lr: 1e-4`
    assert validate(micro)["train"]["d2_32"]["lr"] == pytest.approx(1e-4)
    micro["train"]["d2_32"]["lr"] = "fast"
    assert "train.d2_32.lr: must be a number" in _err(micro)


def test_init_points_at_missing_stage(micro):
    micro["train"]["d2_16"]["init"] = "d2_07"
    assert "train.d2_16.init: names a missing stage 'd2_07'" in _err(micro)


def test_init_must_be_earlier_and_only_first_from_scratch(micro):
    bad = copy.deepcopy(micro)
    bad["train"]["d2_16"]["init"] = "d2_32"
    assert "train.d2_16.init: must name an earlier stage" in _err(bad)
    micro["train"]["d2_16"]["init"] = None
    assert "train.d2_16.init: only the first stage may start from scratch" in _err(micro)


def test_missing_stage_section_and_keys(micro):
    bad = copy.deepcopy(micro)
    del bad["train"]
    assert "stages.yaml: train: missing required section" in _err(bad)
    del micro["train"]["d2_04"]["lr"], micro["stage_defaults"]["lr"]
    assert "train.d2_04.lr: missing required key" in _err(micro)


def test_epochs_xor_iterations(micro):
    micro["train"]["d2_04"]["epochs"] = 3
    assert "train.d2_04.epochs: give exactly one of epochs / iterations" in _err(micro)


def test_bad_choice_and_type(micro):
    bad = copy.deepcopy(micro)
    bad["train"]["d2_04"]["optimizer"] = "adamw"
    assert "train.d2_04.optimizer: must be one of" in _err(bad)
    bad = copy.deepcopy(micro)
    bad["train"]["d2_08"]["heatmap2_init"] = "copy"
    assert "train.d2_08.heatmap2_init: must be one of ['normal', 'upsample'], got 'copy'" in _err(bad)
    bad = copy.deepcopy(micro)
    bad["train"]["d2_04"]["batch_size"] = 2.5
    assert "train.d2_04.batch_size: must be an integer" in _err(bad)
    micro["model"]["input_size"] = 40  # not a multiple of 4*2**depth: ModelConfig says so
    assert "stages.yaml: model.input_size: must be a multiple of 4*2**hourglass_depth = 16, got 40" in _err(micro)
    micro["model"]["input_size"] = 48  # a multiple of 16: valid for the micro preset (hourglass_depth 2)
    assert validate(micro)["model"]["input_size"] == 48


def test_synth_diversity_and_lr_final(micro):
    cfg = validate(copy.deepcopy(micro))
    assert (cfg["data"]["synth_limb_mix"], cfg["data"]["synth_tilt"], cfg["data"]["synth_looks"]) == (0.0, 0.0, "sequence")
    default = make_profile("default")
    assert default["data"]["synth_limb_mix"] > 0 and default["data"]["synth_looks"] == "frame"
    bad = copy.deepcopy(micro)
    bad["data"]["synth_limb_mix"] = 1.5
    assert "data.synth_limb_mix: must be in [0, 1], got 1.5" in _err(bad)
    bad = copy.deepcopy(micro)
    bad["data"]["synth_looks"] = "clip"
    assert "data.synth_looks: must be one of ['sequence', 'frame'], got 'clip'" in _err(bad)
    assert cfg["train"]["d2_04"]["lr_final"] is None
    micro["train"]["d2_04"]["lr_final"] = -1e-5
    assert "train.d2_04.lr_final: must be > 0, got -1e-05" in _err(micro)


def test_lr_schedule() -> None:
    from workflows.train_loop import _lr_factor

    assert [_lr_factor(i, 100, "cosine", 10) for i in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert _lr_factor(10, 100, "cosine", 10) == pytest.approx(1.0)
    assert _lr_factor(55, 100, "cosine", 10) == pytest.approx(0.02 + 0.98 * 0.5)  # half-way
    assert _lr_factor(100, 100, "cosine", 10) == pytest.approx(0.02)  # default end: 2 % of lr
    assert _lr_factor(100, 100, "cosine", 10, final=0.25) == pytest.approx(0.25)  # lr_final / lr
    assert _lr_factor(79, 100, "step", 0) == 1.0 and _lr_factor(80, 100, "step", 0) == 0.1
    assert _lr_factor(50, 100, "constant", 0) == 1.0


def test_lift_and_tune_sections(micro):
    bad = copy.deepcopy(micro)
    bad["lift"]["supervised"]["layers"] = {"a": 1}
    assert "lift.supervised.layers: must be a scalar or a list of scalars" in _err(bad)
    bad = copy.deepcopy(micro)
    bad["lift"]["semi"] = {}
    assert "lift.semi: unknown key" in _err(bad)
    bad = copy.deepcopy(micro)
    bad["tune"]["search"]["ratio_3d"] = {"dist": "loguniform", "lo": 2.0, "hi": 1.0}
    assert "tune.search.ratio_3d.hi: must be > lo" in _err(bad)
    bad = copy.deepcopy(micro)
    bad["tune"]["search"]["momentum"] = {"dist": "uniform", "lo": 0.0, "hi": 1.0}
    assert "tune.search.momentum: unknown key" in _err(bad)
    micro["tune"]["stage"] = "d2_128"
    assert "tune.stage: names a missing stage" in _err(micro)


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "stages.yaml"
    p.write_text("model: {preset: tiny\ntrain: [\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_config(p)
    p.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(p)


def test_cli_check_and_write(run_cli, tmp_path):
    out = tmp_path / "stages.yaml"
    r = run_cli([sys.executable, "-m", "workflows.config", "--profile", "micro", "--write", out])
    assert r.returncode == 0, r.stderr
    r = run_cli([sys.executable, "-m", "workflows.config", "--check", out])
    assert r.returncode == 0 and "ok (profile micro" in r.stdout
    cfg = yaml.safe_load(out.read_text())
    cfg["train"]["d2_08"]["lr"] = -1
    out.write_text(yaml.safe_dump(cfg))
    r = run_cli([sys.executable, "-m", "workflows.config", "--check", out])
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"error: {out}: train.d2_08.lr: must be > 0, got -1.0"]


def test_aug_mapping(micro):
    micro["data"]["aug"] = {"rot_prob": 0.0, "scale_factor": 0.1}
    assert validate(micro)["data"]["aug"] == {"rot_prob": 0.0, "scale_factor": 0.1}
    micro["data"]["aug"] = {"rotation": 1}
    assert "data.aug.rotation: unknown key" in _err(micro)
    micro["data"]["aug"] = "yes"
    assert "data.aug: must be true, false or a mapping" in _err(micro)


def test_stage_defaults_apply_unless_a_stage_says_otherwise(micro):
    """A stage's settings are stage_defaults overridden by its own entry; the budget (iterations or
    epochs) of an entry replaces the defaults' whole."""
    raw = yaml.safe_load(open(__import__("workflows.config", fromlist=["PROFILE_DIR"]).PROFILE_DIR / "micro.yaml"))
    raw["stage_defaults"]["lr"] = 5e-4
    raw["train"]["d2_08"]["lr"] = 1e-3
    raw["train"]["d2_16"]["epochs"] = 3
    cfg = validate(raw)
    assert [cfg["train"][k]["lr"] for k in cfg["train"]] == [5e-4, 5e-4, 1e-3, 5e-4, 5e-4, 5e-4]
    assert cfg["train"]["d2_16"]["epochs"] == 3 and cfg["train"]["d2_16"]["iterations"] is None
    assert cfg["train"]["d2_08"]["iterations"] == 2 and cfg["train"]["d2_02"]["heatmap2_init"] == "normal"
    assert cfg["train"]["d2_04"]["heatmap2_init"] == "upsample" and cfg["stage_defaults"]["lr"] == 5e-4
    bad = copy.deepcopy(raw)
    bad["stage_defaults"]["lr"] = -1
    assert "stage_defaults.lr: must be > 0" in _err(bad)
    bad = copy.deepcopy(raw)
    bad["stage_defaults"]["init"] = "d2_02"
    assert "stage_defaults.init: unknown key" in _err(bad)
    bad = copy.deepcopy(raw)
    del bad["stage_defaults"]["batch_size"]
    assert "train.d2_02.batch_size: missing required key (give it here or in stage_defaults)" in _err(bad)


def test_model_and_aug_are_checked_against_the_dataclasses(micro):
    """No copy of the library's field lists: the model section and data.aug take exactly the fields
    of ModelConfig (less d2 / heatmap2_std, set per stage) and AugConfig, typed as annotated."""
    import dataclasses

    from pose.data import AugConfig
    from pose.model import ModelConfig

    for name in [f.name for f in dataclasses.fields(ModelConfig) if f.name not in ("d2", "heatmap2_std")]:
        cfg = copy.deepcopy(micro)
        cfg["model"][name] = "x"
        assert _err(cfg).startswith(f"stages.yaml: model.{name}: "), name
    cfg = copy.deepcopy(micro)
    cfg["model"]["d2"] = 4
    assert "model.d2: unknown key" in _err(cfg)
    cfg["model"] = {"preset": "micro", "features": 32.0, "norm": "gn"}
    assert validate(cfg)["model"] == {"preset": "micro", "features": 32, "norm": "gn"}
    cfg["model"]["features"] = 30
    assert "stages.yaml: model.features: must be a multiple of 4, got 30" in _err(cfg)
    cfg = copy.deepcopy(micro)
    cfg["data"]["aug"] = {f.name: 0.1 for f in dataclasses.fields(AugConfig) if f.name != "enabled"}
    assert validate(cfg)["data"]["aug"]["rot_max"] == 0.1
    cfg["data"]["aug"]["scale_factor"] = 1.5
    assert "stages.yaml: data.aug.scale_factor: must be < 1, got 1.5" in _err(cfg)


def test_profiles_state_only_what_differs_and_write_fills_the_rest(tmp_path, repo_root):
    """A profile file lists only what differs from the defaults; --write writes it with every section
    DVC reads params from filled in, and that file loads to make_profile's. The committed stages.yaml
    is exactly what --write gives for the default profile."""
    from workflows.config import PROFILE_DIR, SECTIONS, STAGE_FIELDS, main

    for name in PROFILES:
        raw = yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())
        restated = [f"{sec}.{k}" for sec, fields in SECTIONS.items() for k, v in (raw.get(sec) or {}).items()
                    if fields[k].default == v]
        restated += [f"stage_defaults.{k}" for k, v in (raw.get("stage_defaults") or {}).items()
                     if STAGE_FIELDS[k].default == v]
        restated += ["seed"] if raw.get("seed", None) == 0 else []
        assert restated == [], f"profile {name} restates defaults: {restated}"
        out = tmp_path / f"{name}.yaml"
        assert main(["--profile", name, "--write", str(out)]) == 0
        written = yaml.safe_load(out.read_text())
        assert set(written["data"]) == set(SECTIONS["data"]) and set(written["ray"]) == set(SECTIONS["ray"])
        assert load_config(out) == make_profile(name)
        if name == "default":
            assert out.read_text().replace(str(out), "stages.yaml") == (repo_root / "stages.yaml").read_text()


def test_synth_looks_choices_match_the_generator() -> None:
    from pose.data.synth.generate import LOOKS, TRAIN_FAMILIES
    from workflows.config import SECTIONS

    assert SECTIONS["data"]["synth_looks"].choices == LOOKS
    assert SECTIONS["data"]["synth_appearance"].choices == TRAIN_FAMILIES
