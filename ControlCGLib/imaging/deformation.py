"""The class change as a deformation: the smooth, invertible warp that turns the source-class output into the
target-class output, applied to the patient's own scan.

AD is atrophy -- tissue shrinking, CSF spaces growing -- and radiologists read it as volume. A paired run gives two
model outputs from the same noise, one per class (sampling/sampler.py); their *difference* mixes how the anatomy moves
with how the model redraws intensities. Here the difference is read as motion: SimpleITK's diffeomorphic demons
(Vercauteren et al., NeuroImage 2009) estimates the displacement ``u`` on the model grid with
``source(x + u(x)) ~ target(x)``, and the counterfactual is the patient's scan pulled through the same map,
``scan(phi(x))`` with ``phi = id + u``. A linear interpolation of the scan's own voxels: no intensity the scan does not
have, at the scan's own resolution and on its own grid. What the warp does not explain (``target - source o phi``)
stays available as the intensity residual.

Volume follows from the map: a counterfactual voxel at ``x`` comes from input volume ``det D phi(x)``, so its volume
relative to the input is ``1 / det D phi(x)``; :func:`log_volume_change` is ``-log det D phi`` (tensor-based
morphometry's log-Jacobian of the forward change: > 0 grows, < 0 shrinks). A region's volume in the counterfactual is
the number of counterfactual points that ``phi`` sends into it (:func:`warped_volume`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

#: Demons settings of the product: iterations and the Gaussian smoothing of the field (standard deviation in mm: the
#: filter uses the image spacing). Chosen on the validation subjects (docs/method/deformation.md holds the measurement).
ITERATIONS = 50
SMOOTHING = 1.0
#: A warp whose Jacobian determinant falls below this somewhere is smoothed more: it folds, or nearly.
MIN_JACOBIAN = 0.2


@dataclass
class Warp:
    """A displacement field on the model grid: ``phi(x) = x + u(x)`` maps a counterfactual point to the input point
    it shows (physical units, the grid's LPS space)."""

    field: sitk.Image  # vector image (3 components, float64) on the model grid

    @property
    def is_identity(self) -> bool:
        return not np.any(sitk.GetArrayViewFromImage(self.field))

    def transform(self) -> sitk.Transform:
        """``phi`` as a SimpleITK transform (zero displacement outside the grid)."""
        return sitk.DisplacementFieldTransform(sitk.Image(self.field))

    def jacobian(self) -> np.ndarray:
        """``det D phi`` on the grid, (z, y, x), by central differences in physical space. (ITK's
        DisplacementFieldJacobianDeterminantFilter ignores the grid's direction: on the model grid, whose first two
        axes point the other way, it gives 0.80 for an expansion of 1.63.)"""
        u = self.displacement()
        index = np.stack(np.gradient(u, axis=(2, 1, 0)), axis=-1)  # (z, y, x, component, index axis i j k)
        f = self.field
        to_index = np.linalg.inv(np.reshape(f.GetDirection(), (3, 3)) * np.asarray(f.GetSpacing()))
        return np.linalg.det(np.eye(3) + index @ to_index).astype(np.float32)

    def displacement(self) -> np.ndarray:
        """``u`` as (z, y, x, 3) in mm."""
        return sitk.GetArrayFromImage(self.field)


def identity_warp(grid: sitk.Image) -> Warp:
    field = sitk.Image(grid.GetSize(), sitk.sitkVectorFloat64, 3)
    field.CopyInformation(grid)
    return Warp(field)


def _image(array: np.ndarray, grid: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
    img.CopyInformation(grid)
    return img


def estimate_warp(
    source: np.ndarray,
    target: np.ndarray,
    grid: sitk.Image,
    *,
    iterations: int = ITERATIONS,
    smoothing: float = SMOOTHING,
) -> Warp:
    """The diffeomorphic warp with ``source o phi ~ target`` (both (z, y, x) on ``grid``, same intensity scale).

    Equal images give the identity exactly (demons has no force where they agree). The demons run on one ITK thread
    (a repeatable sum) and are smoothed further, up to three times, while the map folds or nearly folds
    (``det D phi < MIN_JACOBIAN``); a map that still folds is refused rather than shown."""
    source, target = np.asarray(source, np.float32), np.asarray(target, np.float32)
    if source.shape != target.shape or source.shape != grid.GetSize()[::-1]:
        raise ValueError(f"source {source.shape}, target {target.shape} and grid {grid.GetSize()[::-1]} differ")
    if np.array_equal(source, target):
        return identity_warp(grid)
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        for attempt in range(4):
            demons = sitk.DiffeomorphicDemonsRegistrationFilter()
            demons.SetNumberOfIterations(int(iterations))
            demons.SetStandardDeviations(float(smoothing) * 1.5**attempt)
            field = demons.Execute(_image(target, grid), _image(source, grid))
            warp = Warp(sitk.Cast(field, sitk.sitkVectorFloat64))
            if float(warp.jacobian().min()) >= MIN_JACOBIAN:
                return warp
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    raise ValueError(
        f"the class change folds the anatomy (Jacobian determinant {warp.jacobian().min():.3f} after smoothing): "
        "the two model outputs are too different to be one smooth deformation; show the intensity change instead"
    )


def log_volume_change(warp: Warp) -> np.ndarray:
    """``-log det D phi`` on the grid: the counterfactual's local volume relative to the input (> 0: grows)."""
    return -np.log(np.maximum(warp.jacobian(), 1e-6)).astype(np.float32)


def warp_array(array: np.ndarray, warp: Warp, grid: sitk.Image) -> np.ndarray:
    """``array o phi`` on the grid, linear interpolation (values stay within the array's range)."""
    if warp.is_identity:
        return np.array(array, dtype=np.float32)
    img = _image(array, grid)
    out = sitk.Resample(img, grid, warp.transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def through(warp: Warp, outer: sitk.Transform) -> sitk.Transform:
    """``outer o phi o outer^-1`` for an affine ``outer`` (model-grid point -> another space's point): the warp as
    that space sees it, e.g. the scan's own space through its registration."""
    from .registration import as_affine

    affine = as_affine(outer)
    return sitk.CompositeTransform([affine, warp.transform(), affine.GetInverse()])  # the last is applied first


def warped_volume(fraction: sitk.Image, transform: sitk.Transform) -> float:
    """The volume (mm^3) that a region's fraction map occupies after the warp (``transform``: counterfactual point ->
    input point, in the map's space): the integral of ``fraction o phi``."""
    out = sitk.Resample(fraction, fraction, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return float(sitk.GetArrayViewFromImage(out).sum() * np.prod(fraction.GetSpacing()))


def volume(fraction: sitk.Image) -> float:
    """The volume (mm^3) of a region's fraction map."""
    return float(sitk.GetArrayViewFromImage(fraction).astype(np.float64).sum() * np.prod(fraction.GetSpacing()))
