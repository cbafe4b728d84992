"""Regional volumes read from intensities, one way for the input, every method's counterfactual and the truth.

A counterfactual is an image, not a deformation, so the only measure that applies alike to all of them is one that
reads tissue from intensity: each voxel's tissue fraction is its intensity placed between the scan's CSF level (the
median of its ventricles) and its grey-matter level (the median of its cortex and hippocampi), clipped to [0, 1]. A
region's tissue volume is the sum of the fractions over the region grown by one voxel (so that tissue moving in or out
across its border is counted); the ventricles' volume is the sum of the CSF fractions (1 − tissue). The levels and the
regions are the *input's* (the scan's own labels, which a simulated cohort carries: data/simulator.py), so that every
image of a subject is measured with the same ruler.

Measured against the simulator's own volumes (benchmarks/volume_ruler.py, 4 mm grid; the truth read with this ruler
vs the manifest): the ventricles' change agrees in size (slope 0.95, r 0.999), the hippocampi's is compressed about
sixfold (slope 0.16, r 0.86: its 2 mm shrinkage mostly stays inside one 4 mm voxel) but keeps its sign and order.
Compare methods with the truth *read with this ruler* (``true_`` columns), never with the manifest.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..data.anatomies import REGIONS

#: Reported regions: name -> (labels, what is counted).
VOLUME_REGIONS = {
    "hippocampi": ((REGIONS["hippocampi"],), "tissue"),
    "ventricles": ((REGIONS["ventricles"],), "csf"),
    "temporal cortex": ((REGIONS["temporal cortex"],), "tissue"),
    "parietal cortex": ((REGIONS["parietal cortex"],), "tissue"),
    "brain": (tuple(REGIONS.values()), "tissue"),
}
_GREY = (REGIONS["temporal cortex"], REGIONS["parietal cortex"], REGIONS["other cortex"], REGIONS["hippocampi"])


class VolumeRuler:
    """The input's tissue levels and grown regions; :meth:`volumes` reads any image of that subject with them."""

    def __init__(self, unit: np.ndarray, labels: np.ndarray, mask: np.ndarray):
        brain = np.asarray(mask) > 0.5
        labels = np.asarray(labels).astype(np.int32) * brain
        csf, grey = labels == REGIONS["ventricles"], np.isin(labels, _GREY)
        if not csf.any() or not grey.any():
            raise ValueError("the subject's labels have no ventricles or no grey matter inside its brain mask")
        self.csf_level, self.grey_level = float(np.median(unit[csf])), float(np.median(unit[grey]))
        if self.grey_level <= self.csf_level:
            raise ValueError("grey matter is not brighter than CSF in this scan: not a T1 the ruler can read")
        self.regions = {name: _grown(np.isin(labels, ids)) & brain for name, (ids, _) in VOLUME_REGIONS.items()}

    def tissue(self, image: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(image) - self.csf_level) / (self.grey_level - self.csf_level), 0.0, 1.0)

    def volumes(self, image: np.ndarray) -> dict[str, float]:
        """Per region, the voxel count of tissue (of CSF for the ventricles)."""
        tissue = self.tissue(image)
        return {
            name: float((tissue if VOLUME_REGIONS[name][1] == "tissue" else 1.0 - tissue)[self.regions[name]].sum())
            for name in VOLUME_REGIONS
        }

    def change_percent(self, image: np.ndarray, reference: dict[str, float]) -> dict[str, float | None]:
        """Per region, the volume of ``image`` relative to ``reference`` (the input's :meth:`volumes`), in %."""
        now = self.volumes(image)
        return {k: (100.0 * (now[k] / v - 1.0) if v > 0 else None) for k, v in reference.items()}


def _grown(region: np.ndarray) -> np.ndarray:
    image = sitk.GetImageFromArray(region.astype(np.uint8))
    return sitk.GetArrayFromImage(sitk.BinaryDilate(image, [1, 1, 1])) > 0
