"""The native-space pipeline: a clinician's T1, as it comes, to the model grid and the counterfactual back.

``prepare`` registers the scan to the MNI template (affine, SimpleITK), resamples it onto the model grid (with
anti-aliasing), strips it with the template's brain mask and normalises it as the paper does. A counterfactual comes
back onto the input's own grid (same size, origin, spacing and direction) in one of two ways:

- ``Prepared.warped_native`` (the product's): the scan itself pulled through the model-grid warp of
  imaging/deformation.py, carried through the registration -- the patient's own image, deformed, at its own
  resolution; ``Prepared.warped_on_grid`` the same warped scan on the model grid, prepared as the input was;
- ``Prepared.to_native`` (the intensity change): the native scan plus the up-sampled model-grid change.

Either way *resampled* is the up-sampled model output itself (blurry where the model grid is coarse), and the
change lives only inside the patient's own brain (imaging/brain_mask.py), not the template's mapped mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..model.config import IntensityConfig
from .brain_mask import patient_brain_mask
from .geometry import anti_alias, model_grid, resample
from .intensity import normalize_brain, scale_brain
from .registration import as_affine, register_affine
from .scan_checks import ScanRefused, Screening, appearance, geometry_findings
from .template import Template, load_template


@dataclass
class NativeResult:
    """Images on the input's own grid (same geometry as the input), intensities in the input's units."""

    detail: sitk.Image  # native + up-sampled change: the counterfactual with the scan's own detail
    resampled: sitk.Image  # the up-sampled model-grid counterfactual
    saliency: sitk.Image  # signed change (counterfactual - input), inside the brain
    mask: sitk.Image  # the patient's brain: the template's mapped back, refined with the scan
    volume_change: sitk.Image | None = None  # log of the local volume ratio counterfactual / input (> 0 grows)
    residual: sitk.Image | None = None  # the model's intensity change the warp does not explain, in scan units


@dataclass
class Prepared:
    """A scan made ready for the model, with everything needed to go back."""

    model_input: np.ndarray  # (z, y, x) on the model grid, in [0, 1], brain only
    mask: np.ndarray  # (z, y, x) bool brain mask on the model grid
    grid: sitk.Image  # the model grid's geometry
    native: sitk.Image  # the input, untouched
    transform: sitk.Transform  # model-grid (template) point -> native point
    low: float  # native intensity mapped to 0
    high: float  # native intensity mapped to 1
    registration_metric: float | None = None
    screening: Screening | None = None  # what the appearance check measured (None: checks off)
    warnings: list[str] = field(default_factory=list)  # findings accepted with screen="warn"
    _native_mask: sitk.Image | None = field(default=None, repr=False)  # made on first use, shared by every w
    _smoothed: sitk.Image | None = field(default=None, repr=False)  # the scan anti-aliased for the model grid

    @classmethod
    def on_model_grid(cls, unit: np.ndarray, mask: np.ndarray, grid: sitk.Image) -> Prepared:
        """A model-grid volume in [0, 1] as its own "scan" (identity geometry): what a counterfactual's own
        counterfactual starts from."""
        native = sitk.GetImageFromArray(np.asarray(unit, dtype=np.float32))
        native.CopyInformation(grid)
        identity = sitk.AffineTransform(3)
        return cls(np.asarray(unit, np.float32), np.asarray(mask, bool), grid, native, identity, 0.0, 1.0)

    def _to_grid_image(self, array: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
        img.CopyInformation(self.grid)
        return img

    def same_scaling(self, image: sitk.Image) -> np.ndarray:
        """Another image of this subject in the same native space (e.g. its true counterfactual) on the model grid,
        scaled with this scan's (low, high), so that differences to ``model_input`` are true intensity changes."""
        return scale_brain(_on_grid(image, self.grid, self.transform), self.mask, self.low, self.high)

    def native_mask(self) -> sitk.Image:
        """The patient's brain on the input's grid (uint8): the template's mask mapped back, refined with the scan."""
        if self._native_mask is None:
            back = as_affine(self.transform).GetInverse()
            mapped = resample(self._to_grid_image(self.mask.astype(np.float32)), self.native, back) > 0.5
            mapped.CopyInformation(self.native)
            self._native_mask = patient_brain_mask(self.native, mapped)
        return self._native_mask

    def warped_on_grid(self, warp) -> np.ndarray:
        """The scan pulled through ``warp`` (imaging/deformation.Warp, on the model grid) onto the model grid,
        prepared as the input was: the array the classifier and the evaluation read. The identity gives the input."""
        if warp.is_identity:
            return self.model_input.copy()
        if self._smoothed is None:
            self._smoothed = anti_alias(self.native, self.grid.GetSpacing())
        to_scan = sitk.CompositeTransform([as_affine(self.transform), warp.transform()])  # the warp, then the scan
        on_grid = sitk.GetArrayFromImage(resample(self._smoothed, self.grid, to_scan, default=self._air()))
        return scale_brain(on_grid, self.mask, self.low, self.high)

    def warped_native(self, warp) -> sitk.Image:
        """The scan pulled through ``warp`` on its own grid, in its own units (linear interpolation of its voxels: no
        intensity it does not have). The identity gives the scan itself."""
        from .deformation import through

        native = sitk.Cast(self.native, sitk.sitkFloat32)
        if warp.is_identity:
            return native
        moved = through(warp, self.transform)
        return sitk.Resample(native, native, moved, sitk.sitkLinear, self._air(), sitk.sitkFloat32)

    def _air(self) -> float:
        return float(np.min(sitk.GetArrayViewFromImage(self.native)))

    def to_native_warped(self, warp, raw: np.ndarray, residual: np.ndarray | None = None) -> NativeResult:
        """The scan warped inside the patient's brain and untouched outside it (``detail`` = scan + ``saliency``,
        every voxel a value of the scan or an interpolation of its neighbours), the local volume change
        (``volume_change``, imaging/deformation.log_volume_change carried through the registration) and the
        model-grid intensity ``residual`` (in [0, 1] units) up-sampled into the scan's units."""
        from .deformation import log_volume_change

        moved = self.warped_native(warp)
        mask = self.native_mask()
        weight = sitk.Cast(mask, sitk.sitkFloat32)
        back = as_affine(self.transform).GetInverse()
        native = sitk.Cast(self.native, sitk.sitkFloat32)
        saliency = (moved - native) * weight
        grown = resample(self._to_grid_image(log_volume_change(warp) * self.mask), self.native, back)
        rest = np.zeros_like(self.model_input) if residual is None else np.where(self.mask, residual, 0.0)
        rest = resample(self._to_grid_image(rest * (self.high - self.low)), self.native, back)
        resampled = self._resampled(raw, back)
        for img in (grown, rest, saliency, resampled):
            img.CopyInformation(self.native)
        return NativeResult(native + saliency, resampled, saliency, mask, grown * weight, rest * weight)

    def _resampled(self, raw: np.ndarray, back: sitk.Transform) -> sitk.Image:
        raw = np.asarray(raw, dtype=np.float32)
        if raw.shape != self.model_input.shape:
            raise ValueError(f"raw output shape {raw.shape} differs from the model grid {self.model_input.shape}")
        scaled = self._to_grid_image(raw * (self.high - self.low) + self.low)
        out = resample(scaled, self.native, back, default=self.low)
        out.CopyInformation(self.native)
        return out

    def to_native(self, counterfactual: np.ndarray, raw: np.ndarray | None = None) -> NativeResult:
        """Bring a model-grid counterfactual (z, y, x, in [0, 1]) back onto the input's grid: its change to the
        input, inside the patient's brain, added to the scan (``detail``); ``raw`` (the model's own output, if it
        differs from the counterfactual shown, as in a paired run) is what ``resampled`` shows."""
        cf = np.asarray(counterfactual, dtype=np.float32)
        raw = cf if raw is None else np.asarray(raw, dtype=np.float32)
        for name, a in (("counterfactual", cf), ("raw output", raw)):
            if a.shape != self.model_input.shape:
                raise ValueError(f"{name} shape {a.shape} differs from the model grid {self.model_input.shape}")
        scale = self.high - self.low
        back = as_affine(self.transform).GetInverse()  # native point -> model-grid point
        change = np.where(self.mask, cf - self.model_input, 0.0)
        mask = self.native_mask()
        weight = sitk.Cast(mask, sitk.sitkFloat32)
        change_native = resample(self._to_grid_image(change * scale), self.native, back)
        change_native.CopyInformation(self.native)
        saliency = change_native * weight
        native = sitk.Cast(self.native, sitk.sitkFloat32)
        resampled = self._resampled(raw, back)
        saliency.CopyInformation(self.native)
        detail = native + saliency
        return NativeResult(detail=detail, resampled=resampled, saliency=saliency, mask=mask)


def _on_grid(image: sitk.Image, grid: sitk.Image, transform: sitk.Transform) -> np.ndarray:
    """(z, y, x) array of ``image`` anti-aliased and sampled on the model grid (``transform``: grid -> image points).
    Grid points outside the image's field of view get its minimum (air), never 0: 0 may be bright tissue in a scan
    with negative intensities, and the brain's minimum sets the normalisation."""
    air = float(np.min(sitk.GetArrayViewFromImage(image)))
    return sitk.GetArrayFromImage(resample(anti_alias(image, grid.GetSpacing()), grid, transform, default=air))


LABEL_MAP_LEVELS = 16  # at most this many distinct values (sampled): a segmentation, not a scan


def check_scan(image: sitk.Image) -> None:
    """Refuse what cannot be a 3D scalar scan, with a message naming the problem."""
    if image.GetDimension() != 3:
        raise ValueError(f"expected a 3D image, got a {image.GetDimension()}D one")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"expected a scalar (grey-level) image, got {image.GetNumberOfComponentsPerPixel()} components per voxel"
        )
    if min(image.GetSize()) < 4:
        raise ValueError(f"the image has only {min(image.GetSize())} voxels along one axis; a whole-brain T1 is needed")
    voxels = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(voxels).all():
        raise ValueError("the image contains NaN or infinite values; export the scan again from its source")
    peak = float(np.abs(voxels).max())
    if peak > float(np.finfo(np.float32).max) / 1e3:  # registration and resampling run in float32
        raise ValueError(
            f"the image's intensities reach {peak:.3g}, beyond single precision; rescale it "
            "(any positive scale works: the intensity range does not matter to the model)"
        )
    if voxels.min() == voxels.max():
        raise ValueError(f"the image is constant (every voxel is {voxels.min():g}): there is no anatomy to explain")
    sample = voxels[::2, ::2, ::2] if voxels.size > 1_000_000 else voxels  # a sample only where it speaks for all
    distinct = np.unique(sample).size  # a T1 has hundreds of grey levels, a segmentation a handful
    if distinct <= LABEL_MAP_LEVELS:
        raise ValueError(
            f"the image has only {distinct} distinct values: it looks like a label map (segmentation), not a "
            "T1-weighted scan; give the T1 it was made from"
        )


SCREEN_MODES = ("refuse", "warn", "off")


def prepare(
    native: sitk.Image,
    grid: Sequence[int],
    *,
    preprocessed: bool = False,
    template: Template | None = None,
    intensity: IntensityConfig | None = None,
    on_iteration: Callable[[int, float], None] | None = None,
    screen: str = "refuse",
) -> Prepared:
    """Register (unless ``preprocessed``: already skull-stripped and in MNI space), resample, mask, normalise.

    ``screen``: what the checks of scan_checks.py do with an unusual scan ("refuse": raise
    :class:`~ControlCGLib.imaging.scan_checks.ScanRefused`, geometry before registration; "warn": keep the findings in
    ``Prepared.warnings``; "off": skip them, for cohorts already known to be T1 brains).
    """
    if screen not in SCREEN_MODES:
        raise ValueError(f"screen must be one of {SCREEN_MODES}, got {screen!r}")
    check_scan(native)
    template = template or load_template()
    reference = model_grid(grid, template.t1)
    findings = geometry_findings(native, reference.GetSpacing()) if screen != "off" else []
    if findings and screen == "refuse":
        raise ScanRefused(findings)
    if preprocessed:
        transform: sitk.Transform = sitk.AffineTransform(3)
        metric = None
    else:
        reg = register_affine(native, template.t1, template.mask, on_iteration=on_iteration)
        transform, metric = reg.transform, reg.metric
    screening = appearance(native, transform, template) if screen != "off" else None
    if screening is not None and screening.findings:
        findings += screening.findings
        if screen == "refuse":
            raise ScanRefused(findings)
    mask = sitk.GetArrayFromImage(resample(template.mask, reference, None, sitk.sitkNearestNeighbor)) > 0.5
    unit, (low, high) = normalize_brain(_on_grid(native, reference, transform), mask, intensity)
    return Prepared(unit, mask, reference, native, transform, low, high, metric, screening, findings)
