"""Real brain anatomies from packages, brought to one form: the base brains of the simulated cohort, as the run time
loads them (``Resources/Anatomies``; data/anatomy_derivation.py makes those files from the packages).

Each base, on the ICBM 2009a template's 2 mm grid: ``t1`` (skull-stripped, scaled inside the brain), ``mask``, ``gm``
and ``wm`` tissue probabilities (CSF is ``mask - gm - wm`` clipped to [0, 1] when loaded) and ``labels``, the regions
of :data:`REGIONS`. Colin27's whole head (with its skull) is kept too, on its own grid, as a real T1 for measures
without ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..imaging.template import Template, load_template
from ..resources import anatomies_dir

#: Region labels of ``labels_2mm.nii.gz`` (0 is outside the brain).
REGIONS = {
    "ventricles": 1,  # lateral ventricles with their temporal horns, third ventricle
    "hippocampi": 2,
    "temporal cortex": 3,  # superior, middle, inferior and transverse temporal, fusiform, entorhinal, parahippocampal
    "parietal cortex": 4,  # inferior and superior parietal, supramarginal, precuneus, posterior and isthmus cingulate
    "other cortex": 5,
    "white matter": 6,
    "other": 7,  # deep grey matter, amygdala, cerebellum, brainstem, fourth ventricle
}
#: The base anatomies, in the order of data/anatomy_derivation.SOURCES (a test keeps them equal).
NAMES = ("icbm2009a", "colin27", "mni152nlin6", "oasis", "cit168", "cat12")
FILES = ("t1", "mask", "gm", "wm", "labels")


@dataclass
class Anatomy(Template):
    """One base brain on the template's grid: a :class:`Template` (T1 in [0, 1], tissue probabilities, mask) with its
    name and region labels."""

    labels: sitk.Image
    name: str = ""

    def region(self, name: str) -> np.ndarray:
        return sitk.GetArrayFromImage(self.labels) == REGIONS[name]


def anatomy_names() -> list[str]:
    return list(NAMES)


def _path(folder: Path, name: str, what: str) -> Path:
    return folder / name / f"{what}_2mm.nii.gz"


def load_anatomy(name: str, folder: str | Path | None = None) -> Anatomy:
    """A committed base anatomy (``Resources/Anatomies``; ICBM 2009a's T1 and tissues are the template's files)."""
    if name not in NAMES:
        raise ValueError(f"unknown anatomy {name!r}; the anatomies are {', '.join(NAMES)}")
    folder = Path(folder) if folder else anatomies_dir()
    images = {}
    if name == "icbm2009a":
        template = load_template()
        images = {"t1": template.t1, "gm": template.gm, "wm": template.wm, "mask": template.mask}
    for what in FILES:
        if what in images:
            continue
        path = _path(folder, name, what)
        if not path.exists():
            raise FileNotFoundError(
                f"anatomy file {path} is missing; the Resources folder is incomplete "
                "(see Resources/Anatomies/README.md to regenerate it)"
            )
        img = sitk.ReadImage(str(path))
        images[what] = sitk.Cast(
            sitk.Cast(img, sitk.sitkFloat32) / (1.0 if what in ("mask", "labels") else 255.0), sitk.sitkFloat32
        )
    mask = sitk.Cast(images["mask"] > 0.5, sitk.sitkFloat32)
    # brain only, for every base alike (the template's own maps keep a faint rim outside its nearest-neighbour mask)
    t1, gm, wm = (sitk.Cast(images[k], sitk.sitkFloat32) * mask for k in ("t1", "gm", "wm"))
    csf = sitk.Clamp(mask - gm - wm, sitk.sitkFloat32, 0.0, 1.0) * mask
    labels = sitk.Cast(images["labels"] * mask, sitk.sitkUInt8)
    return Anatomy(t1=t1, gm=gm, wm=wm, csf=csf, mask=mask, labels=labels, name=name)


def head_scan(folder: str | Path | None = None) -> Path:
    """Colin27's whole head with its skull (2 mm, its own MNI-aligned grid): a real T1 of one person."""
    return (Path(folder) if folder else anatomies_dir()) / "colin27" / "head_t1_2mm.nii.gz"


def head_hippocampi(folder: str | Path | None = None) -> Path:
    """The AAL atlas's hippocampi drawn on Colin27, on :func:`head_scan`'s grid (0/1): that head's own regions."""
    return (Path(folder) if folder else anatomies_dir()) / "colin27" / "hippocampi_aal_2mm.nii.gz"
