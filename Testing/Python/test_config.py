import json

import pytest

from ControlCGLib.defaults import STEPS
from ControlCGLib.model.config import (
    CLASSIFIER_PRESETS,
    CONFIG_FILE,
    FORMAT_VERSION,
    PRESETS,
    ConfigError,
    ModelConfig,
    UNetConfig,
    preset,
    read_model_config,
    to_dict,
    write_model_config,
)
from ControlCGLib.sampling.settings import BlendConfig, InjectionConfig, SamplingConfig, product_injection


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


@pytest.mark.parametrize("cfg", [*PRESETS.values(), *CLASSIFIER_PRESETS.values()])
def test_json_round_trip(tmp_path, cfg):
    path = write_model_config(cfg, tmp_path, {"steps": 3})
    assert path == tmp_path / CONFIG_FILE
    assert read_model_config(tmp_path) == (cfg, {"steps": 3})
    assert json.loads(path.read_text())["format_version"] == FORMAT_VERSION


def test_the_embedded_models_read_without_torch():
    import subprocess
    import sys

    code = (
        "import sys; from ControlCGLib.model.config import read_model_config as r; "
        "from ControlCGLib.resources import diffusion_dir as d, classifier_dir as c; "
        "print(type(r(d())[0]).__name__, type(r(c())[0]).__name__, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["ModelConfig", "ClassifierConfig", "False"]


def _folder(tmp_path, data):
    (tmp_path / CONFIG_FILE).write_text(json.dumps(data))
    return tmp_path


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
    with pytest.raises(ConfigError, match=r"config.json: unknown key\(s\) \['chanels'\] in unet"):
        read_model_config(_folder(tmp_path, data))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"format_version": FORMAT_VERSION + 1, "new_field": 1}, "newer than this ControlCG understands"),
        ({"format_version": 0}, "format_version 0; ControlCG writes 1 to"),
        ({"format_version": "1"}, "format_version '1'"),
        ({"kind": "SamplingConfig"}, r"kind 'SamplingConfig'; expected one of \['ClassifierConfig', 'ModelConfig'\]"),
        ({"kind": None}, "kind None"),
        ({"provenance": [1]}, "provenance must be a JSON object"),
    ],
)
def test_unknown_kinds_versions_and_provenance_are_refused(tmp_path, changes, message):
    data = {"kind": "ModelConfig", **to_dict(preset("cpu")), **changes}
    with pytest.raises(ConfigError, match=message):
        read_model_config(_folder(tmp_path, data))


def test_corrupt_or_missing_files_are_refused(tmp_path):
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        read_model_config(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("[1]")
    with pytest.raises(ConfigError, match="not a JSON object"):
        read_model_config(tmp_path)
    with pytest.raises(ConfigError, match="is missing: .* is not a ControlCG model folder"):
        read_model_config(tmp_path / "nowhere")


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
    with pytest.raises(ConfigError, match="solver"):
        SamplingConfig(solver="euler")
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
    assert product_injection("auto", "cpu") is None  # measured to change nothing (defaults.INJECTION)
    assert product_injection("auto", "paper") == InjectionConfig()
    assert product_injection("on", "cpu") == InjectionConfig()
    assert product_injection("off", "paper") is None


def test_blending_is_the_product_default_and_can_be_turned_off():
    import argparse

    from ControlCGLib.commands.counterfactual import register
    from ControlCGLib.run_request import RunRequest
    from ControlCGLib.sampling.settings import product_sampling

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    common = ["counterfactual", "t1.nii.gz", "--target", "AD", "--out", "o"]
    unset = RunRequest.from_args(parser.parse_args(common), "t1.nii.gz")
    assert unset.blend is None and product_sampling("cpu", **unset.sampling_changes()).blend == BlendConfig()
    off = RunRequest.from_args(parser.parse_args([*common, "--no-blend"]), "t1.nii.gz")
    assert off.blend is False and product_sampling("cpu", **off.sampling_changes()).blend is None
    with pytest.raises(ConfigError, match="injection must be one of"):
        product_injection("yes", "cpu")
