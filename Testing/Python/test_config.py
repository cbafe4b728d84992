import json

import pytest

from ControlCGLib.defaults import STEPS
from ControlCGLib.model.config import (
    FORMAT_VERSION,
    PRESETS,
    ConfigError,
    ModelConfig,
    UNetConfig,
    load_config,
    preset,
    save_config,
    to_dict,
)
from ControlCGLib.sampling.blending import BlendConfig
from ControlCGLib.sampling.settings import InjectionConfig, SamplingConfig, product_injection


def test_paper_preset_matches_section_4():
    p = preset("paper")
    assert p.grid == (80, 96, 80)
    assert p.unet.channels == (64, 64, 128)
    assert p.unet.attention_levels == (False, False, True)
    assert p.class_names == ("CN", "AD")
    assert p.schedule.prediction_type == "v"
    assert p.noise.kind == "pyramid"
    assert p.intensity.percentile == 99.5


def test_cpu_preset_is_smaller_and_valid():
    c = preset("cpu")
    assert c.grid == (40, 48, 40)
    assert max(c.unet.channels) < max(PRESETS["paper"].unet.channels)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip(tmp_path, name):
    cfg = PRESETS[name]
    path = save_config(cfg, tmp_path / "config.json")
    assert load_config(path) == cfg
    assert json.loads(path.read_text())["format_version"] == FORMAT_VERSION


def test_sampling_config_round_trip_with_and_without_injection(tmp_path):
    from ControlCGLib.model.config import from_dict

    for cfg in (
        SamplingConfig(),
        SamplingConfig(injection=None),
        SamplingConfig(injection=InjectionConfig(layers=("mid",))),
        SamplingConfig(blend=BlendConfig(threshold=0.3)),
    ):
        assert from_dict(SamplingConfig, to_dict(cfg)) == cfg


def test_unknown_key_is_named(tmp_path):
    data = {"kind": "ModelConfig", **to_dict(preset("cpu"))}
    data["unet"]["chanels"] = [1, 2, 3]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"chanels.*unet"):
        load_config(path)


def test_newer_format_version_is_refused(tmp_path):
    data = {"kind": "ModelConfig", **to_dict(preset("cpu")), "format_version": FORMAT_VERSION + 1, "new_field": 1}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="newer"):
        load_config(path)


def test_corrupt_json_is_refused(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"grid": (40, 48, 41)}, "divisible by 4"),
        ({"class_names": ("CN",)}, "two distinct"),
        ({"class_names": ("CN", "CN")}, "two distinct"),
        ({"p_uncond": 1.0}, "p_uncond"),
    ],
)
def test_invalid_model_config(changes, message):
    with pytest.raises(ConfigError, match=message):
        preset("cpu").replace(**changes)


def test_invalid_unet_config():
    with pytest.raises(ConfigError, match="same length"):
        UNetConfig(channels=(8, 8), attention_levels=(False, False, True))
    with pytest.raises(ConfigError, match="norm_num_groups"):
        UNetConfig(channels=(8, 12, 16), attention_levels=(False, False, True), norm_num_groups=8, num_head_channels=8)


def test_class_index():
    cfg = ModelConfig()
    assert cfg.class_index("AD") == 1 and cfg.class_index("cn") == 0 and cfg.class_index(1) == 1
    assert cfg.null_class == 2
    with pytest.raises(ConfigError, match=r"unknown class 'MCI'.*\['CN', 'AD'\]"):
        cfg.class_index("MCI")
    with pytest.raises(ConfigError):
        cfg.class_index(2)


def test_sampling_config_validation():
    with pytest.raises(ConfigError, match="method"):
        SamplingConfig(method="euler")
    with pytest.raises(ConfigError, match="start_strength"):
        SamplingConfig(start_strength=0)
    with pytest.raises(ConfigError, match=r"sampling.start_strength must lie in \[0.05, 1\], got 0.01"):
        SamplingConfig(start_strength=0.01)
    with pytest.raises(ConfigError, match=r"sampling.steps must be a whole number"):
        SamplingConfig(steps=2.5)
    assert SamplingConfig().steps == STEPS.default and SamplingConfig().start_strength == 1.0  # the paper's start
    with pytest.raises(ConfigError, match="window"):
        InjectionConfig(window=(0.5, 0.5))
    inj = InjectionConfig(window=(0.0, 0.5))
    assert [inj.active(i, 4) for i in range(4)] == [True, True, False, False]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("grid", ["80", 96, 80], r"grid\[0\] must be of type int"),
        ("p_uncond", "0.1", "p_uncond must be of type float"),
        ("class_in_time_embedding", 1, "must be of type bool"),
    ],
)
def test_wrong_json_types_are_named(field, value, message):
    from ControlCGLib.model.config import from_dict

    data = to_dict(preset("cpu"))
    data[field] = value
    with pytest.raises(ConfigError, match=message):
        from_dict(ModelConfig, data)
    data = to_dict(preset("cpu"))
    data["schedule"]["num_train_timesteps"] = 1000.0
    with pytest.raises(ConfigError, match="schedule.num_train_timesteps must be of type int"):
        from_dict(ModelConfig, data)


def test_product_injection_follows_the_model_preset_unless_chosen():
    assert product_injection("auto", "cpu") is None  # the embedded model: measured to change nothing (issue 16)
    assert product_injection("auto", "paper") == InjectionConfig()
    assert product_injection("on", "cpu") == InjectionConfig()
    assert product_injection("off", "paper") is None


def test_blending_is_the_product_default_and_can_be_turned_off():
    import argparse

    from ControlCGLib.commands.counterfactual import CounterfactualRequest, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    common = ["counterfactual", "t1.nii.gz", "--target", "AD", "--out", "o"]
    assert CounterfactualRequest.from_args(parser.parse_args(common), "t1.nii.gz").blend is True
    off = parser.parse_args([*common, "--no-blend"])
    assert CounterfactualRequest.from_args(off, "t1.nii.gz").blend is False
    with pytest.raises(ConfigError, match="injection must be one of"):
        product_injection("yes", "cpu")
