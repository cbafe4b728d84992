"""read_scan: the formats a clinician brings (NIfTI, NRRD, MetaImage, a DICOM series folder) keep their voxels
and geometry, and what cannot be read right (truncated gzip, several series, one slice, a missing slice) is refused."""

from __future__ import annotations

import locale
import random

import numpy as np
import pytest
import SimpleITK as sitk

from ControlCGLib.imaging.reading import read_scan

# A real (oblique) rotation, det +1: DICOM's slice normal is always row x col, so a reflection cannot round-trip.
ROTATION = np.array(
    sitk.VersorRigid3DTransform((0.1, -0.2, 0.3, float(np.sqrt(1 - 0.14)))).GetMatrix(), dtype=float
).reshape(3, 3)
SPACING = (0.9, 1.3, 2.5)  # (x, y, z), anisotropic
ORIGIN = (-10.5, 20.25, 3.0)
SHAPE = (10, 14, 12)  # (z, y, x)
STUDY_UID = "1.2.826.0.1.3680043.2.1125.1.1"


def synthetic(dtype=np.float32, seed: int = 0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 3000, size=SHAPE).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        array += rng.random(SHAPE).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(ROTATION.flatten().tolist())
    return image


def assert_same(a: sitk.Image, b: sitk.Image, tol: float) -> None:
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=tol)


def write_dicom_series(image: sitk.Image, folder, series_uid: str, prefix: str = "s", skip=()) -> None:
    """SimpleITK's DicomSeriesFromArray way: one file per z slice, its position and orientation in the tags; files
    named in shuffled order so that the reader must sort by position."""
    folder.mkdir(exist_ok=True)
    d = image.GetDirection()
    spacing = image.GetSpacing()
    shared = {
        "0008|0060": "MR",
        "0008|0008": "DERIVED\\SECONDARY",
        "0020|000d": STUDY_UID,
        "0020|000e": series_uid,
        "0020|0037": "\\".join(f"{c:.8f}" for c in (d[0], d[3], d[6], d[1], d[4], d[7])),  # first two columns
        "0028|0030": f"{spacing[1]}\\{spacing[0]}",  # row spacing (y) \ column spacing (x)
        "0018|0050": str(spacing[2]),
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    slices = [k for k in range(image.GetSize()[2]) if k not in skip]
    names = random.Random(series_uid).sample(range(len(slices)), len(slices))
    ctype = locale.setlocale(locale.LC_CTYPE)
    try:
        for k, n in zip(slices, names):
            piece = image[:, :, k]
            for tag, value in shared.items():
                piece.SetMetaData(tag, value)
            position = image.TransformIndexToPhysicalPoint((0, 0, k))
            piece.SetMetaData("0020|0032", "\\".join(f"{c:.6f}" for c in position))
            piece.SetMetaData("0020|0013", str(k + 1))
            writer.SetFileName(str(folder / f"{prefix}{n:03d}.dcm"))
            writer.Execute(piece)
    finally:
        locale.setlocale(locale.LC_CTYPE, ctype)  # GDCM's writer switches the process to the C locale


@pytest.mark.parametrize("name", ["scan.nii", "scan.nii.gz", "scan.nrrd", "scan.nhdr", "scan.mha", "scan.mhd"])
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_single_file_round_trip(tmp_path, name, dtype):
    image = synthetic(dtype)
    sitk.WriteImage(image, str(tmp_path / name), useCompression=name.endswith(".gz"))
    back = read_scan(tmp_path / name)
    assert back.GetPixelID() == image.GetPixelID()
    # NIfTI stores spacing, offset and the quaternion in float32: agreement to ~1e-6, within 1e-4.
    assert_same(back, image, tol=1e-4)


def test_dicom_series_round_trip_sorted_by_position(tmp_path):
    image = synthetic(np.int16)
    write_dicom_series(image, tmp_path / "dicom", "1.2.826.0.1.3680043.2.1125.2.1")
    back = read_scan(tmp_path / "dicom")
    assert_same(back, image, tol=1e-3)
    assert back.GetPixelID() == sitk.sitkInt16


def test_two_series_are_listed_and_one_can_be_chosen(tmp_path):
    first, second = "1.2.826.0.1.3680043.2.1125.3.1", "1.2.826.0.1.3680043.2.1125.3.2"
    write_dicom_series(synthetic(np.int16, seed=1), tmp_path, first, prefix="a")
    write_dicom_series(synthetic(np.int16, seed=2), tmp_path, second, prefix="b")
    with pytest.raises(ValueError, match="2 DICOM series") as info:
        read_scan(tmp_path)
    assert first in str(info.value) and second in str(info.value) and f"({SHAPE[0]} files)" in str(info.value)
    assert_same(read_scan(tmp_path, series=second), synthetic(np.int16, seed=2), tol=1e-3)
    with pytest.raises(ValueError, match="no DICOM series 1.2.3"):
        read_scan(tmp_path, series="1.2.3")


def test_folder_without_dicom_and_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        read_scan(tmp_path / "empty")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here\n")
    with pytest.raises(ValueError, match="no DICOM series in"):
        read_scan(tmp_path / "notes")


def test_single_slice_is_refused(tmp_path):
    write_dicom_series(synthetic(np.int16), tmp_path, "1.2.826.0.1.3680043.2.1125.4.1", skip=range(1, SHAPE[0]))
    assert len(list(tmp_path.iterdir())) == 1
    with pytest.raises(ValueError, match="single 2D slice"):
        read_scan(tmp_path)
    with pytest.raises(ValueError, match="single DICOM slice; pass the folder"):
        read_scan(next(tmp_path.iterdir()))


def test_missing_path_is_refused(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_scan(tmp_path / "nothing.nii.gz")


def test_truncated_gzip_is_refused(tmp_path):
    path = tmp_path / "scan.nii.gz"
    sitk.WriteImage(synthetic(np.float32), str(path), useCompression=True)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(ValueError, match="truncated") as info:
        read_scan(path)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_garbage_file_is_refused(tmp_path):
    path = tmp_path / "x.nii"
    path.write_bytes(b"this is not an image\n" * 40)
    with pytest.raises(ValueError, match="^cannot read ") as info:
        read_scan(path)
    assert "\n" not in str(info.value) and info.value.__suppress_context__


def test_missing_middle_slice_is_refused(tmp_path):
    write_dicom_series(synthetic(np.int16), tmp_path, "1.2.826.0.1.3680043.2.1125.5.1", skip={SHAPE[0] // 2})
    with pytest.raises(ValueError, match="unevenly spaced slices: .* from 2.5 to 5 mm"):
        read_scan(tmp_path)


def test_truncated_uncompressed_nifti_is_refused(tmp_path):
    """ITK reads a short .nii without complaint, the missing tail as zeros; the header's own size gives it away."""
    path = tmp_path / "scan.nii"
    sitk.WriteImage(synthetic(np.float32), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(ValueError, match=r"is truncated: its header describes \d+ bytes, the file holds \d+"):
        read_scan(path)


def test_an_uncompressed_file_named_gz_is_read(tmp_path):
    sitk.WriteImage(synthetic(np.float32), str(tmp_path / "scan.nii"))
    (tmp_path / "scan.nii.gz").write_bytes((tmp_path / "scan.nii").read_bytes())
    assert_same(read_scan(tmp_path / "scan.nii.gz"), synthetic(np.float32), 1e-4)


def test_a_series_id_with_a_file_is_refused(tmp_path):
    sitk.WriteImage(synthetic(np.float32), str(tmp_path / "scan.nii"))
    with pytest.raises(ValueError, match="a series ID was given but .* is a file"):
        read_scan(tmp_path / "scan.nii", series="1.2.3")
