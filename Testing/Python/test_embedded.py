"""The embedded default model, classifier and sample: present, small, consistent, and the main job runs on them."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from ControlCGLib.cli import main
from ControlCGLib.imaging.geometry import same_geometry
from ControlCGLib.model.checkpoints import WEIGHTS, file_sha256, load_checkpoint, read_checkpoint_config
from ControlCGLib.model.config import ClassifierConfig, ModelConfig
from ControlCGLib.resources import classifier_dir, diffusion_dir, judge_dir, models_dir, resources_dir, sample_scan


def test_embedded_set_is_complete_and_under_25_mb():
    files = [p for d in (models_dir(), resources_dir() / "Sample") for p in d.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"weights.safetensors", "config.json", "TRAINING.md", "loss_curve.png", "sample_T1.nii.gz"} <= names
    assert sum(p.stat().st_size for p in files) < 25e6


def test_embedded_models_agree_on_grid_and_classes():
    model, classifier = load_checkpoint(diffusion_dir()), load_checkpoint(classifier_dir())
    assert isinstance(model.config, ModelConfig) and isinstance(classifier.config, ClassifierConfig)
    assert tuple(model.config.grid) == tuple(classifier.config.grid)
    assert tuple(model.config.class_names) == tuple(classifier.config.class_names) == ("CN", "AD")
    judge = load_checkpoint(judge_dir())  # the evaluation's independent classifier: same world, other network
    assert tuple(judge.config.grid) == tuple(model.config.grid) and judge.config.class_names == ("CN", "AD")
    assert judge.config.init_features != classifier.config.init_features
    assert read_checkpoint_config(diffusion_dir())[1]["steps"] >= 1000  # a trained model, not an initialisation


def test_demo_runs_the_embedded_model_on_the_sample(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "2", "--w", "0", "4", "--threads", "2"]) == 0
    record = json.loads((out / "result.json").read_text())
    assert record["model_sha256"] == file_sha256(diffusion_dir() / WEIGHTS)
    assert record["classifier_sha256"] == file_sha256(classifier_dir() / WEIGHTS)
    # the embedded classifier sees the bundled (cognitively normal) sample as CN
    assert record["input_verdict"]["CN"] > 0.5
    assert set(record["verdicts"]) == {"0", "4"}
    assert record["settings"]["sampling"]["precision"] in ("fp32", "bf16")  # auto resolved and recorded
    scan = sitk.ReadImage(str(sample_scan()))
    for name in ("counterfactual_w4.nii.gz", "saliency_w4.nii.gz"):
        assert same_geometry(sitk.ReadImage(str(out / name)), scan, tol=1e-5)
    assert np.abs(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "saliency_w4.nii.gz")))).max() > 0
    assert record["settings"]["registration_metric"] < -0.5  # the sample is off MNI space; registration found it


def test_counterfactual_takes_the_input_positionally_or_as_option_but_not_both(tmp_path, capsys):
    scan = str(sample_scan())
    args = ["counterfactual", scan, "--input", str(tmp_path / "other.nii.gz"), "--target", "AD", "--out", str(tmp_path)]
    assert main(args) == 2
    assert "give the input once" in capsys.readouterr().err
    assert main(["counterfactual", "--target", "AD", "--out", str(tmp_path / "o")]) == 2
    assert "no input image" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
