"""ADNI-style cohort CSVs: checks that name the row, subject-level splits, the paper's preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ControlCGLib.data.cohort import CohortDataset, CohortError, preprocess, read_cohort, split_by_subject


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


def _template_on(direction, spacing):
    """The template T1 (x 300, one hemisphere partly brightened) on a grid of the given direction and spacing."""
    from ControlCGLib.imaging.geometry import resample
    from ControlCGLib.imaging.template import load_template

    t1 = load_template().t1
    marked = sitk.GetArrayFromImage(t1) * 300.0
    marked[30:60, 40:70, 20:40] *= 2.0  # a bright block in one hemisphere: a mirrored result would miss it
    marked_image = sitk.GetImageFromArray(marked)
    marked_image.CopyInformation(t1)
    centre = np.array(t1.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in t1.GetSize()]))
    size = np.ceil(np.array([200.0, 236.0, 192.0]) / spacing).astype(int)
    ref = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    d = np.diag(direction).astype(float)
    ref.SetDirection(d.flatten().tolist())
    ref.SetSpacing([spacing] * 3)
    ref.SetOrigin((centre - d @ ((size - 1) / 2 * spacing)).tolist())
    return resample(marked_image, ref)


def test_preprocess_lands_any_mni_file_on_the_same_grid(tmp_path):
    nilearn_like = _template_on((-1, -1, 1), 1.0)  # LPS voxels, 1 mm
    fsl_like = _template_on((1, -1, 1), 1.5)  # LAS voxels (FSL's MNI152 files), 1.5 mm
    a, b = preprocess(nilearn_like, (40, 48, 40)), preprocess(fsl_like, (40, 48, 40))
    assert a.shape == b.shape == (40, 48, 40) and a.dtype == np.float32
    assert a.min() >= 0 and 0.9 < a.max() <= 1.0
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99  # same place, not mirrored (mirrored: 0.90)
    sitk.WriteImage(fsl_like, str(tmp_path / "s.nii.gz"))
    scans = read_cohort(_csv(tmp_path, ["s.nii.gz,AD,s1,train"]))
    volume, label = CohortDataset(scans, (40, 48, 40), ("CN", "AD"))[0]
    assert tuple(volume.shape) == (1, 40, 48, 40) and label == 1
    assert float(volume.min()) >= -1 and float(volume.max()) <= 1
