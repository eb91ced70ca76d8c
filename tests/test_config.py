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
    del micro["train"]["d2_04"]["lr"]
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
    assert "stages.yaml: model:" in _err(micro)


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


def test_config_choices_match_the_library() -> None:
    from pose.data import AugConfig
    from pose.model import HEATMAP2_INITS, ModelConfig
    from workflows import config

    assert config.HEATMAP2_INITS == HEATMAP2_INITS
    assert set(config.MODEL_FIELDS) <= set(ModelConfig.__dataclass_fields__)
    assert set(config.AUG_FIELDS) <= set(AugConfig.__dataclass_fields__)


def test_synth_looks_choices_match_the_generator() -> None:
    """workflows.config keeps its own copy of the choices (it imports no rendering code)."""
    from pose.data.synth.generate import LOOKS
    from workflows.config import SECTIONS

    assert SECTIONS["data"]["synth_looks"].choices == LOOKS
