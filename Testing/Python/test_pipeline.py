"""The main job end to end on a simulated subject: files, geometry, verdicts, refusal to overwrite."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
import torch
from conftest import randomise, tiny_config

from ControlCGLib.checkpoints import save_checkpoint
from ControlCGLib.cli import main
from ControlCGLib.config import ClassifierConfig
from ControlCGLib.geometry import same_geometry
from ControlCGLib.networks import ClassConditionalUNet, build_classifier
from ControlCGLib.simulator import CohortSimulator


def test_counterfactual_command(tmp_path):
    cfg = tiny_config(grid=(8, 12, 8))
    torch.manual_seed(0)
    save_checkpoint(randomise(ClassConditionalUNet(cfg), std=0.05), cfg, tmp_path / "model")
    ccfg = ClassifierConfig(grid=(8, 12, 8), init_features=4, growth_rate=4, block_config=(1,))
    save_checkpoint(build_classifier(ccfg).eval(), ccfg, tmp_path / "classifier")
    sim = CohortSimulator()
    _, image, _, _ = sim.subject(0, seed=0, label="CN")
    scan = sitk.GetImageFromArray(image)
    scan.CopyInformation(sim.anatomy.reference)
    sitk.WriteImage(scan, str(tmp_path / "t1.nii.gz"))
    args = [
        "counterfactual",
        "--model",
        str(tmp_path / "model"),
        "--input",
        str(tmp_path / "t1.nii.gz"),
        "--target",
        "AD",
        "--w",
        "0",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--steps",
        "3",
        "--preprocessed",
        "--classifier",
        str(tmp_path / "classifier"),
    ]
    assert main(args) == 0
    record = json.loads((tmp_path / "out" / "result.json").read_text())
    assert set(record["verdicts"]) == {"input", "w=0", "w=2"}
    assert abs(sum(record["verdicts"]["w=2"].values()) - 1) < 1e-5
    assert len(record["model_sha256"]) == 64 and record["settings"]["scales"] == [0.0, 2.0]
    for name in ("counterfactual_w2.nii.gz", "counterfactual_resampled_w2.nii.gz", "saliency_w2.nii.gz"):
        out = sitk.ReadImage(str(tmp_path / "out" / name))
        assert same_geometry(out, scan, tol=1e-5)
    saliency = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "saliency_w2.nii.gz")))
    assert np.abs(saliency).max() > 0
    assert (tmp_path / "out" / "montage.png").stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(record["files"] + ["result.json"])
    # a second run without --overwrite is refused and leaves the results alone
    before = (tmp_path / "out" / "result.json").read_text()
    assert main(args) == 2
    assert (tmp_path / "out" / "result.json").read_text() == before
