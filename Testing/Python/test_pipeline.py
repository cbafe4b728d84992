"""The main job end to end on a simulated subject: files, geometry, verdicts, refusal to overwrite."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
from conftest import tiny_model_files

from ControlCGLib.cli import main
from ControlCGLib.imaging.geometry import same_geometry


def test_counterfactual_command(tmp_path):
    scan = tiny_model_files(tmp_path)
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
        "--source",
        "CN",  # the tiny random classifier calls this CN subject AD: "auto" would pair AD with AD (no change)
    ]
    assert main(args) == 0
    record = json.loads((tmp_path / "out" / "result.json").read_text())
    assert record["settings"]["source"] == "CN" and set(record["raw_verdicts"]) == {"0", "2"}
    assert record["format_version"] == 2 and set(record["input_verdict"]) == {"CN", "AD"}
    assert set(record["verdicts"]) == {"0", "2"} and set(record["outputs"]) == {"0", "2"}  # one w spelling
    assert abs(sum(record["verdicts"]["2"].values()) - 1) < 1e-5
    assert len(record["model_sha256"]) == 64 and record["settings"]["scales"] == [0.0, 2.0]
    assert record["settings"]["sampling"]["injection"] is None  # auto: off for a model not of the paper preset
    assert record["settings"]["sampling"]["blend"] == {"threshold": 0.2, "sigma": 1.0, "start": 0.3}  # product default
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
