"""Regional volumes a radiologist reads -- hippocampi, ventricles, temporal and parietal cortex, whole brain -- of the
input and of a deformation counterfactual, in mL and %.

The regions are the ICBM 2009a atlas's (data/anatomies.REGIONS, on the template's 2 mm grid, where the model grid
lives too), so the input's volumes are the atlas's regions scaled by the scan's affine registration: a head-size-
corrected reference, not a segmentation of this patient. The *change* is the counterfactual's own: a region's
counterfactual volume is the atlas region pulled through the warp (imaging/deformation.warped_volume), and its
percentage change is independent of the registration's scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .imaging.deformation import Warp, volume, warped_volume

#: Reported regions: name -> atlas labels (data/anatomies.REGIONS).
REPORTED = {
    "hippocampi": ("hippocampi",),
    "ventricles": ("ventricles",),
    "temporal cortex": ("temporal cortex",),
    "parietal cortex": ("parietal cortex",),
    "brain": ("hippocampi", "temporal cortex", "parietal cortex", "other cortex", "white matter", "other"),
}


@dataclass
class RegionVolumes:
    """One region's volume in the input and in the counterfactual."""

    input_ml: float
    counterfactual_ml: float

    @property
    def change_percent(self) -> float:
        return 100.0 * (self.counterfactual_ml / self.input_ml - 1.0)

    def as_dict(self) -> dict[str, float]:
        return {
            "input_ml": round(self.input_ml, 3),
            "counterfactual_ml": round(self.counterfactual_ml, 3),
            "change_percent": round(self.change_percent, 3),
        }


def region_fractions(labels: sitk.Image | None = None) -> dict[str, sitk.Image]:
    """Each reported region as a float map (1 inside) on the atlas's grid."""
    from .data.anatomies import REGIONS, load_anatomy

    labels = labels if labels is not None else load_anatomy("icbm2009a").labels
    array = sitk.GetArrayFromImage(labels)
    out = {}
    for name, parts in REPORTED.items():
        img = sitk.GetImageFromArray(np.isin(array, [REGIONS[p] for p in parts]).astype(np.float32))
        img.CopyInformation(labels)
        out[name] = img
    return out


def scan_scale(transform: sitk.Transform) -> float:
    """mm^3 of the scan per mm^3 of the template under the registration (template point -> scan point)."""
    from .imaging.registration import as_affine

    return float(abs(np.linalg.det(np.reshape(as_affine(transform).GetMatrix(), (3, 3)))))


def regional_volumes(
    warp: Warp, transform: sitk.Transform, fractions: dict[str, sitk.Image] | None = None
) -> dict[str, RegionVolumes]:
    """Per region, the input's and the counterfactual's volume in the scan's mL (``transform``: the registration,
    model-grid point -> scan point)."""
    fractions = fractions if fractions is not None else region_fractions()
    scale = scan_scale(transform) / 1000.0
    phi = None if warp.is_identity else warp.transform()
    return {
        name: RegionVolumes(volume(f) * scale, (volume(f) if phi is None else warped_volume(f, phi)) * scale)
        for name, f in fractions.items()
    }
