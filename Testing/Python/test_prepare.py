"""``controlcg prepare`` (data/preparation.py) on the realistic cohort (data/realistic_cohort.py): the same model input
as the counterfactual path, resumable after a crash, refusals listed with their reasons."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import PREPARED_GRID

from ControlCGLib.cli import main
from ControlCGLib.data.cohort import CohortDataset, read_cohort
from ControlCGLib.data.preparation import Cancelled, PrepareSettings, prepare_cohort, robust_z
from ControlCGLib.imaging.intensity import to_model_range
from ControlCGLib.imaging.reading import read_scan
from ControlCGLib.model.config import preset


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _refused_early(cohort, path):
    """A copy of ``cohort`` with only its truncated file and its slab, absolute image paths: scans refused before any
    registration, so that a test of the machinery around them takes seconds."""
    rows = _rows(cohort)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            if r["subject"] in ("refuse-truncated", "refuse-slab"):
                writer.writerow({**r, "image": str(cohort.parent / r["image"])})
    return path


def test_prepared_input_is_bit_identical_to_the_counterfactual_path(prepared_realistic, monkeypatch, tiny_model):
    import ControlCGLib.pipeline as pipeline

    config = preset("cpu")
    row = _rows(prepared_realistic / "prepared.csv")[0]
    seen = {}

    class Stop(Exception):
        pass

    def capture(model, y0, *args, **kwargs):  # the very tensor the counterfactual gives the model
        seen["y0"] = y0.clone()
        raise Stop

    monkeypatch.setattr(pipeline, "counterfactual", capture)
    tiny_model.config = config  # only its grid, intensity and classes are read before sampling
    with pytest.raises(Stop):
        pipeline.run_counterfactual(tiny_model, read_scan(row["source"]), "AD", (1.0,))
    scans = [s for s in read_cohort(prepared_realistic / "prepared.csv") if s.subject == row["subject"]]
    volume, label = CohortDataset(scans, config.grid, config.class_names, config.intensity)[0]
    assert scans[0].prepared == "40x48x40" and label == config.class_names.index(row["label"])
    assert torch.equal(volume[0].float(), seen["y0"])
    on_disk = sitk.GetArrayFromImage(sitk.ReadImage(str(prepared_realistic / row["image"])))
    assert np.array_equal(to_model_range(on_disk, config.intensity).astype(np.float32), seen["y0"].numpy())


def test_a_prepared_scan_for_another_grid_is_refused(prepared_realistic):
    scans = read_cohort(prepared_realistic / "prepared.csv")
    with pytest.raises(ValueError, match="prepared for the 40x48x40 grid"):
        CohortDataset(scans, (16, 24, 16), ("CN", "AD"))[0]


def test_interrupted_preparation_resumes_to_the_same_files(tmp_path, realistic_cohort, prepared_realistic):
    settings = PrepareSettings(grid=PREPARED_GRID, intensity=preset("cpu").intensity)
    done = []
    with pytest.raises(Cancelled):
        prepare_cohort(realistic_cohort, tmp_path, settings, on_scan=done.append, should_stop=lambda: len(done) >= 2)
    assert len(list((tmp_path / "records").glob("*.json"))) == 2 and not (tmp_path / "prepared.csv").exists()
    (tmp_path / "scans" / ".partial-999-half.nii.gz").write_bytes(b"half a file")  # a crash mid-write
    again = []
    summary = prepare_cohort(realistic_cohort, tmp_path, settings, on_scan=again.append)
    assert sum(r.get("skipped", False) for r in again) == 2 and summary["complete"]
    assert not list(tmp_path.rglob(".partial-*"))
    files = sorted(p.relative_to(prepared_realistic) for p in (prepared_realistic / "scans").iterdir())
    assert files == sorted(p.relative_to(tmp_path) for p in (tmp_path / "scans").iterdir())
    for name in files:
        assert (tmp_path / name).read_bytes() == (prepared_realistic / name).read_bytes(), name
    assert (tmp_path / "prepared.csv").read_bytes() == (prepared_realistic / "prepared.csv").read_bytes()


def test_refusals_are_listed_with_their_reasons(prepared_realistic):
    refused = {r["subject"]: r for r in _rows(prepared_realistic / "refusals.csv")}
    assert set(refused) == {"refuse-t2like", "refuse-slab", "refuse-truncated"}
    assert "T2-weighted" in refused["refuse-t2like"]["reason"]
    assert "covers only" in refused["refuse-slab"]["reason"]
    assert refused["refuse-truncated"]["kind"] == "unreadable" and "truncated" in refused["refuse-truncated"]["reason"]
    summary = json.loads((prepared_realistic / "summary.json").read_text())
    assert summary["prepared"] == 4 and summary["refused"] == 3 and summary["complete"]
    assert {r["subject"] for r in summary["refusals"]} == set(refused)
    prepared = _rows(prepared_realistic / "prepared.csv")
    assert {r["subject"] for r in prepared}.isdisjoint(refused) and len(prepared) == 4
    qc = _rows(prepared_realistic / "qc.csv")
    assert len(qc) == 4 and all(float(r["brain_coverage"]) > 0.95 for r in qc)
    assert (prepared_realistic / "contact_sheet.png").stat().st_size > 10_000


def test_robust_z_flags_the_outlier():
    z = robust_z([-0.80, -0.79, -0.81, -0.80, -0.30])
    assert abs(z[-1]) > 3.5 and all(abs(v) < 3.5 for v in z[:-1])


def test_prepare_command_shards_and_refuses_bad_arguments(tmp_path, realistic_cohort, capsys):
    assert main(["prepare", str(realistic_cohort), "--out", str(tmp_path), "--shard", "3/2"]) == 2
    assert "0 <= i < n" in capsys.readouterr().err
    small = _refused_early(realistic_cohort, tmp_path / "two.csv")
    out = tmp_path / "out"
    assert main(["prepare", str(small), "--out", str(out), "--grid", "16", "24", "16", "--shard", "0/2"]) == 0
    assert "1 of 2 scans done" in capsys.readouterr().out and not (out / "prepared.csv").exists()
    assert main(["prepare", str(small), "--out", str(out), "--grid", "16", "24", "16", "--shard", "1/2"]) == 0
    assert main(["prepare", str(small), "--out", str(out), "--grid", "16", "24", "16"]) == 0
    text = capsys.readouterr().out
    assert "0 prepared, 2 refused" in text and len(_rows(out / "refusals.csv")) == 2
    assert main(["prepare", str(small), "--out", str(out), "--grid", "8", "12", "8"]) == 2  # another grid, same folder
    assert "other settings" in capsys.readouterr().err


def test_torchrun_ranks_share_the_scans(tmp_path, realistic_cohort):
    import subprocess
    import sys

    small = _refused_early(realistic_cohort, tmp_path / "refusals.csv")  # the test times the machinery only
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "ControlCGLib.cli", "prepare", str(small), "--out", str(out), "--grid", "16", "24", "16"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "0 prepared, 2 refused" in done.stdout and len(_rows(out / "refusals.csv")) == 2


def test_a_dicom_series_folder_is_prepared_like_a_file(tmp_path, realistic_cohort):
    import locale

    from test_reading import write_dicom_series

    ctype = locale.setlocale(locale.LC_CTYPE)

    row = _rows(realistic_cohort)[0]
    write_dicom_series(sitk.ReadImage(str(realistic_cohort.parent / row["image"])), tmp_path / "series", "1.2.3.4")
    locale.setlocale(locale.LC_CTYPE, ctype)  # GDCM's DICOM writer switches the process to the C locale
    cohort = tmp_path / "cohort.csv"
    cohort.write_text(f"image,label,subject\nseries,{row['label']},{row['subject']}\n")
    summary = prepare_cohort(cohort, tmp_path / "out", PrepareSettings(grid=(16, 24, 16)))
    assert summary["prepared"] == 1 and summary["refused"] == 0, summary["refusals"]
    (prepared,) = _rows(tmp_path / "out" / "prepared.csv")
    assert prepared["source"] == str(tmp_path / "series") and prepared["split"] == ""
