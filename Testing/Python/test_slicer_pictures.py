"""The scripts that draw the Slicer guide's pictures run on a result folder: docs/make_slicer_overlay.py's volume-change
rows (the module's colours and window) and Testing/Python/render_panel.py's panel filled from a run, with the regional
volume table the module's Logic fills. Small synthetic result folders; the pictures themselves are looked at by eye."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ControlCGLib.outputs import RunRecord, write_result_folder

ROOT = Path(__file__).resolve().parents[2]


def _image(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing((2.0, 2.0, 2.0))
    image.SetOrigin((-20.0, -24.0, -18.0))
    return image


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A deformation run's result folder toward AD at w = 4: a bright ball, its volume change (one region shrinks,
    one grows), verdicts and regional volumes."""
    z, y, x = np.mgrid[:18, :24, :20]
    ball = (((x - 10) ** 2 + (y - 12) ** 2 + (z - 9) ** 2) < 49).astype(np.float32)
    change = np.where(x < 10, -0.4, 0.5) * ball
    by_kind = {
        "counterfactual": _image(500 * ball),
        "counterfactual_resampled": _image(480 * ball),
        "saliency": _image(-20 * ball),
        "volume_change": _image(change),
        "residual": _image(0 * ball),
    }
    record = RunRecord(
        input="t1.nii.gz",
        target="AD",
        model="m",
        model_sha256="ab" * 32,
        class_names=["CN", "AD"],
        settings={"source": "CN", "seed": 0},
        classifier_sha256="cd" * 32,
        input_verdict={"CN": 0.9, "AD": 0.1},
        verdicts={"4": {"CN": 0.3, "AD": 0.7}},
        raw_verdicts={"4": {"CN": 0.1, "AD": 0.9}},
        volumes={"4": {"hippocampi": {"input_ml": 9.5, "counterfactual_ml": 8.6, "change_percent": -9.5}}},
    )
    out = tmp_path_factory.mktemp("run") / "run"
    write_result_folder(out, {4.0: by_kind}, _image(ball), record)
    return out


def test_the_volume_change_picture_draws_one_row_per_run(run_folder, tmp_path):
    spec = importlib.util.spec_from_file_location("make_slicer_overlay", ROOT / "docs" / "make_slicer_overlay.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "volume_change.png"
    script.main(
        [str(run_folder), str(run_folder), "--overlay", "volume-change", "--labels", "a", "b", "--out", str(out)]
    )
    assert out.stat().st_size > 10_000
    title = script._volume_change_title("a", __import__("json").loads((run_folder / "result.json").read_text()), 4.0)
    assert title == "a: AD from CN; p(AD) 0.10 \u2192 0.70; hippocampi -10 %"
    with pytest.raises(SystemExit, match="one label per run"):
        script.main([str(run_folder), "--overlay", "volume-change", "--labels", "a", "b", "--out", str(out)])


def test_the_panel_picture_is_filled_from_a_run(run_folder, tmp_path):
    pytest.importorskip("PySide6.QtUiTools", reason="PySide6 draws the panel")
    out = tmp_path / "panel.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "Testing" / "Python" / "render_panel.py"),
            "--run",
            str(run_folder),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 10_000
