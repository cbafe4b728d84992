"""ADNI-style cohort CSVs: checks that name the row, subject-level splits, the paper's preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ControlCGLib.cohort import CohortDataset, CohortError, centre_crop, preprocess, read_cohort, split_by_subject


def _scan(path, value=100.0, size=(60, 70, 50)):
    arr = np.zeros(size[::-1], np.float32)
    arr[10:-10, 10:-10, 10:-10] = value
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    return path.name


def _csv(folder, rows, header="image,label,subject,split"):
    path = folder / "cohort.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_reads_rows_relative_to_the_csv(tmp_path):
    a, b = _scan(tmp_path / "a.nii.gz"), _scan(tmp_path / "b.nii.gz")
    scans = read_cohort(_csv(tmp_path, [f"{a},cn,s1,train", f"{b},AD,s2,val"]))
    assert [(s.row, s.label, s.subject, s.split) for s in scans] == [(2, "CN", "s1", "train"), (3, "AD", "s2", "val")]
    assert scans[0].image == tmp_path / "a.nii.gz"


@pytest.mark.parametrize(
    "row, message",
    [
        ("missing.nii.gz,CN,s9,train", r"row 3 \(subject 's9'\): image file .*missing.nii.gz does not exist"),
        ("a.nii.gz,MCI,s9,train", r"row 3 \(subject 's9'\): unknown label 'MCI'"),
        ("broken.nii.gz,CN,s9,train", r"row 3 \(subject 's9'\): cannot read image"),
        ("a.nii.gz,AD,s1,val", r"subject 's1' is in split 'train' \(row 2\) and in 'val' \(row 3\)"),
    ],
)
def test_problems_name_the_row(tmp_path, row, message):
    _scan(tmp_path / "a.nii.gz")
    (tmp_path / "broken.nii.gz").write_bytes(b"not an image at all")
    with pytest.raises(CohortError, match=message):
        read_cohort(_csv(tmp_path, ["a.nii.gz,CN,s1,train", row]))


def test_missing_column_is_named(tmp_path):
    with pytest.raises(CohortError, match=r"missing column\(s\) \['subject'\]"):
        read_cohort(_csv(tmp_path, ["a.nii.gz,CN"], header="image,label"))


def test_random_split_keeps_subjects_together_and_is_stratified(tmp_path):
    name = _scan(tmp_path / "a.nii.gz")
    rows = [f"{name},{'AD' if (i // 2) % 2 else 'CN'},s{i // 2}," for i in range(40)]  # two scans a subject
    scans = read_cohort(_csv(tmp_path, rows))
    splits = split_by_subject(scans, seed=1)
    subjects = {k: {s.subject for s in v} for k, v in splits.items()}
    assert not subjects["train"] & subjects["val"]
    assert len(subjects["train"]) == 16 and len(subjects["val"]) == 4
    assert {s.label for s in splits["val"]} == {"CN", "AD"}
    assert split_by_subject(scans, seed=1) == splits


def test_centre_crop_and_pad_keep_physical_placement():
    img = sitk.Image([200, 240, 190], sitk.sitkUInt8)
    img.SetOrigin((10.0, -5.0, 3.0))
    cropped = centre_crop(img)
    assert cropped.GetSize() == (160, 192, 160)
    assert np.allclose(cropped.GetOrigin(), img.TransformIndexToPhysicalPoint((20, 24, 15)))
    small = centre_crop(sitk.Image([100, 100, 100], sitk.sitkUInt8))
    assert small.GetSize() == (160, 192, 160)
    assert np.allclose(small.GetOrigin(), (-30.0, -46.0, -30.0))


def test_preprocess_normalises_and_downsamples(tmp_path):
    arr = np.zeros((170, 210, 180), np.float32)  # (z, y, x) of a 180 x 210 x 170 scan
    arr[30:140, 40:170, 30:150] = np.linspace(20, 420, 120)[None, None, :]  # a smooth ramp along x
    out = preprocess(sitk.GetImageFromArray(arr), (40, 48, 40))
    assert out.shape == (40, 48, 40) and out.dtype == np.float32
    assert out.min() >= 0 and 0.95 < out.max() <= 1.0
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "s.nii.gz"))
    scans = read_cohort(_csv(tmp_path, ["s.nii.gz,AD,s1,train"]))
    volume, label = CohortDataset(scans, (40, 48, 40), ("CN", "AD"))[0]
    assert tuple(volume.shape) == (1, 40, 48, 40) and label == 1
    assert float(volume.min()) >= -1 and float(volume.max()) <= 1
