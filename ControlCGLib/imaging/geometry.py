"""Geometry: images with their physical placement, the model grid, and resampling to it and back.

Conventions, in one place:

- Library images are SimpleITK images (physical space LPS, as ITK defines it).
- Arrays are (z, y, x) = (k, j, i), the order of ``sitk.GetArrayFromImage`` and Slicer's ``arrayFromVolume``.
- Slicer hands over an IJK->RAS 4x4 matrix; :func:`image_from_array` and :func:`array_and_ijk_to_ras` convert
  between that and an ITK image (RAS = diag(-1, -1, 1) LPS). No other module flips axes.
- The model grid is the paper's crop of MNI space (160 x 192 x 160 mm around the template's centre) sampled at the
  model's grid size (80 x 96 x 80 -> 2 mm; 40 x 48 x 40 -> 4 mm), with the template's direction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

#: The paper's centre crop of the 1 mm MNI template, in mm, as (z, y, x) like the grids.
CROP_MM = (160.0, 192.0, 160.0)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def ras_to_lps(v) -> np.ndarray:
    """A point, direction or matrix of columns from RAS (Slicer, MNI coordinates) to LPS (ITK); its own inverse."""
    return LPS_TO_RAS @ np.asarray(v, dtype=float)


lps_to_ras = ras_to_lps


def image_from_array(array: np.ndarray, ijk_to_ras: np.ndarray) -> sitk.Image:
    """ITK image from a (k, j, i) array and a Slicer-style IJK->RAS matrix (any rotation, spacing, shear-free)."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"expected a 3D (k, j, i) array, got shape {array.shape}")
    m = np.asarray(ijk_to_ras, dtype=float)
    if m.shape != (4, 4):
        raise ValueError(f"ijk_to_ras must be a 4x4 matrix, got shape {m.shape}")
    lps = LPS_TO_RAS @ m[:3, :3]  # columns: physical step per i, j, k in LPS
    spacing = np.linalg.norm(lps, axis=0)
    if np.any(spacing <= 0):
        raise ValueError("ijk_to_ras is singular: a zero column, the voxel spacing would be zero")
    direction = lps / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise ValueError("ijk_to_ras is sheared; only rotations and per-axis spacings are supported")
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.flatten().tolist())
    image.SetOrigin((LPS_TO_RAS @ m[:3, 3]).tolist())
    return image


def array_and_ijk_to_ras(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(k, j, i) array and Slicer-style IJK->RAS matrix of an ITK image; inverse of :func:`image_from_array`."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    m[:3, 3] = LPS_TO_RAS @ np.array(image.GetOrigin())
    return sitk.GetArrayFromImage(image), m


def same_geometry(a: sitk.Image, b: sitk.Image, tol: float = 1e-6) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol)
    )


def model_grid(grid: Sequence[int], template: sitk.Image) -> sitk.Image:
    """Empty reference image of the model grid (z, y, x sizes): the paper's crop around the template's centre."""
    grid = tuple(int(g) for g in grid)
    if len(grid) != 3:
        raise ValueError(f"the model grid must have three sizes, got {grid}")
    size_xyz = grid[::-1]
    spacing_xyz = [CROP_MM[::-1][a] / size_xyz[a] for a in range(3)]
    direction = np.array(template.GetDirection()).reshape(3, 3)
    centre = np.array(template.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in template.GetSize()]))
    half = (np.array(size_xyz) - 1) / 2 * np.array(spacing_xyz)
    origin = centre - direction @ half
    ref = sitk.Image([int(s) for s in size_xyz], sitk.sitkFloat32)
    ref.SetSpacing(spacing_xyz)
    ref.SetDirection(direction.flatten().tolist())
    ref.SetOrigin(origin.tolist())
    return ref


def resample(
    image: sitk.Image,
    reference: sitk.Image,
    transform: sitk.Transform | None = None,
    interpolator: int = sitk.sitkLinear,
    default: float = 0.0,
) -> sitk.Image:
    """``image`` sampled on ``reference``'s grid; ``transform`` maps reference points to ``image`` points."""
    return sitk.Resample(image, reference, transform or sitk.Transform(), interpolator, default, sitk.sitkFloat32)


def coarser_grid(image: sitk.Image, spacing: float) -> sitk.Image:
    """An empty float32 grid of ``spacing`` mm voxels covering ``image``'s physical extent, with its direction (voxel
    centres move half a step inward so that the extent stays centred)."""
    old = np.array(image.GetSpacing())
    size = [int(n) for n in np.ceil(np.array(image.GetSize()) * old / spacing)]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing((float(spacing),) * 3)
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin(image.TransformContinuousIndexToPhysicalPoint(((spacing - old) / 2 / old).tolist()))
    return grid


def anti_alias(image: sitk.Image, target_spacing: Sequence[float]) -> sitk.Image:
    """Gaussian blur so that down-sampling to ``target_spacing`` does not alias (sigma in mm, per axis)."""
    src = np.array(image.GetSpacing())
    sigma = np.sqrt(np.clip(np.array(target_spacing) ** 2 - src**2, 0, None)) / 2.355
    if not np.any(sigma > 0):
        return image
    # an axis already as coarse as the target (thick slices) needs no blur, but ITK's filter refuses a zero sigma
    sigma = np.where(sigma > 0, sigma, 1e-3 * src)
    return sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), sigma.tolist())
