"""The result folder: what the writer puts there, the reader gets back; refusals name the problem."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from ControlCGLib import __version__
from ControlCGLib.defaults import w_key
from ControlCGLib.outputs import (
    FORMAT_VERSION,
    KINDS,
    RunRecord,
    provenance,
    read_record,
    read_result_folder,
    write_result_folder,
)
from ControlCGLib.progress import Cancelled


def _image(value: float) -> sitk.Image:
    img = sitk.GetImageFromArray(np.full((4, 5, 6), value, dtype=np.float32))
    img.SetSpacing((1.0, 1.5, 2.0))
    img.SetOrigin((3.0, -4.0, 5.0))
    img.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    return img


def _record() -> RunRecord:
    return RunRecord(
        input="scan.nii.gz",
        target="AD",
        model="/models/m",
        model_sha256="ab" * 32,
        class_names=["CN", "AD"],
        settings={"seed": 7, "scan_warnings": ["odd field of view"], "sampling": {"steps": 3}},
        input_verdict={"CN": 0.9, "AD": 0.1},
        verdicts={w_key(2.5): {"CN": 0.4, "AD": 0.6}, w_key(4.0): {"CN": 0.1, "AD": 0.9}},
    )


def _images():
    return {w: {k: _image(w + i) for i, k in enumerate(KINDS)} for w in (2.5, 4.0)}


def test_a_result_folder_reads_back_as_written(tmp_path):
    out = tmp_path / "new" / "out"
    written = write_result_folder(out, _images(), _image(1.0), _record(), montage=lambda p: p.write_bytes(b"png"))
    assert written.outputs["4"]["saliency"] == "saliency_w4.nii.gz" and "2.5" in written.outputs
    assert sorted(p.name for p in out.iterdir()) == sorted([*written.files, "result.json"])
    record, images = read_result_folder(out)
    assert record == written and record.format_version == FORMAT_VERSION
    assert record.scales == [2.5, 4.0] and record.verdict(4.0)["AD"] == 0.9 and record.verdict(6.0) == {}
    assert record.warnings == ["odd field of view"]
    for w, by_kind in images.items():
        for i, kind in enumerate(KINDS):
            img = by_kind[kind]
            assert float(sitk.GetArrayViewFromImage(img).mean()) == w + i
            assert img.GetDirection() == _image(0).GetDirection() and img.GetOrigin() == _image(0).GetOrigin()
    note = images[4.0]["saliency"].GetMetaData("ITK_FileNotes")
    assert note == provenance("saliency", 4.0, record) and note.startswith(f"ControlCG {__version__} model abababab")
    assert "w=4 to AD seed 7" in note and len(note) <= 79


def test_a_cancel_while_writing_leaves_nothing(tmp_path):
    out = tmp_path / "made" / "out"
    with pytest.raises(Cancelled):
        write_result_folder(out, _images(), _image(1.0), _record(), should_stop=lambda: True)
    assert not (tmp_path / "made").exists()  # the folders this call made are gone again
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "mine.txt").write_text("the user's")
    with pytest.raises(Cancelled):
        write_result_folder(keep, _images(), _image(1.0), _record(), should_stop=lambda: True)
    assert [p.name for p in keep.iterdir()] == ["mine.txt"]


def test_foreign_or_old_records_are_refused_by_name(tmp_path):
    (tmp_path / "result.json").write_text(json.dumps({"target": "AD", "verdicts": {"input": {}}}))
    with pytest.raises(ValueError, match="result format 1; this ControlCG .* reads format 2"):
        read_record(tmp_path)
    (tmp_path / "result.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "target": "AD"}))
    with pytest.raises(ValueError, match="lacks input, model, model_sha256, class_names, settings"):
        read_record(tmp_path)
    (tmp_path / "result.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a ControlCG run record"):
        read_record(tmp_path)
    (tmp_path / "result.json").write_text(_record().to_json())
    with pytest.raises(ValueError, match="lists no outputs"):
        read_result_folder(tmp_path)
