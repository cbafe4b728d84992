"""The real anatomy: the MNI ICBM152 2009a nonlinear symmetric template, as nilearn's wheel ships it.

nilearn 0.14.1 carries, under ``nilearn/datasets/data/``, the skull-stripped T1 and the grey- and white-matter
probability maps (``mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``: 197x233x189 at 1 mm, uint8), but no
CSF map and no brain mask. :func:`derive_template` makes them and writes down-sampled copies into
``Resources/Template`` (committed, so nothing is downloaded or installed at run time):

- brain mask: voxels where the skull-stripped T1 is non-zero or GM + WM > 0.05, holes filled, largest component;
- CSF probability: ``mask * clip(1 - GM - WM, 0, 1)`` (the three tissue classes sum to one inside the brain).

Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill
University. Permission to use, copy, modify, and distribute this software and its documentation for any purpose and
without fee is hereby granted, provided that the above copyright notice appear in all copies. The authors and McGill
University make no representations about the suitability of this software for any purpose. It is provided "as is"
without express or implied warranty. (Fonov et al., NeuroImage 2011 and 2009; Collins et al. 1999.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..imaging.geometry import coarser_grid
from ..resources import template_dir

SOURCE_NAMES = {k: f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}
MAPS = ("t1", "gm", "wm", "csf", "mask")


def _file(folder: Path, name: str, spacing: float) -> Path:
    return folder / f"mni_icbm152_2009a_sym_{name}_{spacing:g}mm.nii.gz"


@dataclass
class Template:
    """Template maps as SimpleITK images (LPS physical space, one grid): T1 and probabilities in [0, 1]."""

    t1: sitk.Image
    gm: sitk.Image
    wm: sitk.Image
    csf: sitk.Image
    mask: sitk.Image

    def array(self, name: str) -> np.ndarray:
        """(z, y, x) float32 array of one map."""
        return sitk.GetArrayFromImage(getattr(self, name)).astype(np.float32)


def load_template(spacing: float = 2.0, folder: str | Path | None = None) -> Template:
    """The committed, down-sampled template (T1 scaled to [0, 1], tissue maps as probabilities, binary mask)."""
    folder = Path(folder) if folder else template_dir()
    images = {}
    for name in MAPS:
        path = _file(folder, name, spacing)
        if not path.exists():
            raise FileNotFoundError(
                f"template file {path} is missing; the Resources folder is incomplete "
                "(set CONTROLCG_RESOURCES or run 'controlcg template --from <nilearn data folder>')"
            )
        img = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)
        images[name] = img if name == "mask" else img / 255.0
    return Template(**images)


def largest_component(mask: sitk.Image) -> sitk.Image:
    """The largest connected component of a binary mask, as uint8."""
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    return sitk.Cast(labels == 1, sitk.sitkUInt8)


def derive_template(source: str | Path, out: str | Path | None = None, spacing: float = 2.0) -> dict[str, Path]:
    """Derive mask and CSF from nilearn's 1 mm template files in ``source`` and write ``spacing``-mm copies."""
    source = Path(source)
    out = Path(out) if out else template_dir()
    out.mkdir(parents=True, exist_ok=True)
    images = {}
    for key, name in SOURCE_NAMES.items():
        path = source / name
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: point --from at nilearn/datasets/data of nilearn 0.14.1")
        images[key] = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)
    t1, gm, wm = images["t1"], images["gm"] / 255.0, images["wm"] / 255.0
    mask = sitk.Or(t1 > 0, (gm + wm) > 0.05)
    mask = largest_component(sitk.BinaryFillhole(mask))
    csf = sitk.Clamp(1.0 - gm - wm, sitk.sitkFloat32, 0.0, 1.0) * sitk.Cast(mask, sitk.sitkFloat32)
    maps = {"t1": t1 / 255.0, "gm": gm, "wm": wm, "csf": csf, "mask": sitk.Cast(mask, sitk.sitkFloat32)}

    target = coarser_grid(t1, spacing)  # same extent and direction, coarser voxels
    written = {}
    for name, img in maps.items():
        sigma = 0.0 if name == "mask" else 0.5 * spacing / 2.355 * 2  # ~FWHM of the new voxel, anti-aliasing
        src = sitk.SmoothingRecursiveGaussian(img, sigma) if sigma else img
        res = sitk.Resample(
            src,
            target,
            sitk.Transform(),
            sitk.sitkNearestNeighbor if name == "mask" else sitk.sitkLinear,
            0.0,
            sitk.sitkFloat32,
        )
        if name == "mask":
            arr = sitk.Cast(res > 0.5, sitk.sitkUInt8)
        else:
            arr = sitk.Cast(sitk.Clamp(res * 255.0 + 0.5, sitk.sitkFloat32, 0.0, 255.0), sitk.sitkUInt8)
        arr.CopyInformation(res)
        path = _file(out, name, spacing)
        sitk.WriteImage(arr, str(path), useCompression=True)
        written[name] = path
    return written
