"""Reading a clinician's scan: one file (NIfTI, NRRD, MetaImage, anything ITK reads) or a folder of one DICOM series.

Refused with a ValueError naming the problem rather than read wrongly: a truncated gzip file (ITK's NIfTI reader reads
past the end of the stream and fills the rest with garbage), a folder with several series, a single slice, and a series
whose slices are unevenly spaced (a missing slice: ITK would stretch the volume and warn only on the console).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SPACING_TOLERANCE = 0.01  # relative variation of the gaps between consecutive DICOM slices that is accepted


def read_scan(path, series: str | None = None) -> sitk.Image:
    """The image at ``path`` (a file, or a folder holding a DICOM series; ``series`` picks one series by its ID)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if series is not None and not path.is_dir():
        raise ValueError(f"a series ID was given but {path} is a file; pass the folder that holds the DICOM series")
    try:
        if path.is_dir():
            return _read_dicom_folder(path, series)
        _check_complete(path)
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"cannot read {path}: {error_line(exc)}") from None
    if _is_one_slice(image) and _image_io(path) == "GDCMImageIO":
        raise ValueError(f"{path} is a single DICOM slice; pass the folder holding its whole series")
    return image


def header_voxels(path) -> int | None:
    """Number of voxels a single-file scan holds, from its header alone (None for a folder or an unreadable file):
    lets the memory check count the scan before it is read."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return int(np.prod(reader.GetSize())) * reader.GetNumberOfComponents()
    except RuntimeError:
        return None


def error_line(exc: BaseException) -> str:
    """The last non-empty line of an error's message: what ITK and torch put after their own call stacks."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _check_complete(path: Path) -> None:
    """Refuse a NIfTI shorter than its header says and a truncated gzip stream: ITK's NIfTI reader reads past the
    end of either and fills the rest with zeros or garbage."""
    name = path.name.lower()
    with open(path, "rb") as f:
        compressed = name.endswith(".gz") and f.read(2) == b"\x1f\x8b"  # a mis-named plain file: let ITK try
    try:
        length = _stream_length(path) if compressed else path.stat().st_size
    except (EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"{path} is truncated or corrupt ({exc}); copy it again from its source") from None
    if name.endswith((".nii", ".nii.gz")):
        needed = _nifti_bytes(path)
        if needed is not None and length < needed:
            raise ValueError(
                f"{path} is truncated: its header describes {needed} bytes, the file holds {length}; copy it again "
                "from its source"
            )


def _stream_length(path: Path) -> int:
    total = 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            total += len(chunk)
    return total


def _nifti_bytes(path: Path) -> int | None:
    """Header offset plus voxel bytes of a single-file NIfTI, from the header's own fields (None when it cannot say)."""
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        field = reader.GetMetaData
        dims = [int(field(f"dim[{i}]")) for i in range(1, int(field("dim[0]")) + 1)]
        return int(float(field("vox_offset"))) + int(np.prod(dims)) * int(field("bitpix")) // 8
    except (RuntimeError, ValueError):
        return None


def _image_io(path: Path) -> str:
    try:
        return sitk.ImageFileReader.GetImageIOFromFileName(str(path))
    except RuntimeError:
        return ""


def _is_one_slice(image: sitk.Image) -> bool:
    return image.GetDimension() == 2 or (image.GetDimension() == 3 and image.GetSize()[2] == 1)


def _read_dicom_folder(folder: Path, series: str | None) -> sitk.Image:
    if not any(folder.iterdir()):
        raise ValueError(f"the folder {folder} is empty")
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise ValueError(f"no DICOM series in {folder}")
    files = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in ids}
    listing = ", ".join(f"{sid} ({len(names)} files)" for sid, names in files.items())
    if series is None and len(ids) > 1:
        raise ValueError(
            f"{folder} holds {len(ids)} DICOM series: {listing}; pass the folder of one series (or choose one by ID)"
        )
    sid = ids[0] if series is None else series
    if sid not in files:
        raise ValueError(f"no DICOM series {sid} in {folder}; it holds {listing}")
    names = files[sid]
    if len(names) == 1:
        image = sitk.ReadImage(names[0])  # an enhanced (multi-frame) file holds a whole volume
        if _is_one_slice(image):
            raise ValueError(f"the DICOM series {sid} in {folder} is a single 2D slice, not a 3D scan")
        return image
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    reader.MetaDataDictionaryArrayUpdateOn()  # the per-slice tags, for the spacing check below
    image = reader.Execute()
    _check_slice_gaps(reader, len(names), f"the DICOM series {sid} in {folder}")
    return image


def _check_slice_gaps(reader: sitk.ImageSeriesReader, count: int, what: str) -> None:
    """Refuse unevenly spaced slices (GDCM has sorted them along the slice normal); skipped when tags are missing."""
    position, orientation = "0020|0032", "0020|0037"
    if not all(reader.HasMetaDataKey(i, position) for i in range(count)) or not reader.HasMetaDataKey(0, orientation):
        return
    try:
        cosines = [float(v) for v in reader.GetMetaData(0, orientation).split("\\")]
        points = np.array([[float(v) for v in reader.GetMetaData(i, position).split("\\")] for i in range(count)])
    except ValueError:
        return
    if len(cosines) != 6 or points.shape != (count, 3):
        return
    gaps = np.diff(points @ np.cross(cosines[:3], cosines[3:]))
    if gaps.mean() < 0:
        gaps = -gaps
    low, high = float(gaps.min()), float(gaps.max())
    if low <= 0 or high - low > SPACING_TOLERANCE * high:
        raise ValueError(
            f"{what} has unevenly spaced slices: the gaps between consecutive slices range from {low:.4g} to "
            f"{high:.4g} mm (a missing slice, or several acquisitions in one series); it cannot be read as one volume"
        )
