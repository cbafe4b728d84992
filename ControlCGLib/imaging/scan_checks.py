"""Is this a whole-brain T1? Checks that run before the model sees a scan, each naming what it found.

The model was trained on T1-weighted brains; a counterfactual of anything else (another contrast, another organ, a
few slices) would look plausible and mean nothing. Two kinds of checks:

- **geometry**, from the header alone, before any work: the field of view must be large enough for a brain, the
  voxels near-isotropic (not a 2D acquisition), and no side much coarser than the model grid (the model would invent
  the detail between thick slices);
- **appearance**, after registration, on the scan sampled on the template grid, against the template's tissue maps
  (pure-tissue voxels: WM > 0.9, GM > 0.6, CSF > 0.9):

  * *coverage*: the share of the template's brain inside the scan's field of view (a slab of the brain would be
    completed by the model, not explained);
  * *tissue separation*: the correlation ratio eta^2 of intensity given tissue class (Roche et al., MICCAI 1998), a
    similarity that does not care about the contrast. Any registered brain MR separates its tissues; an image of
    something else, or a failed registration, does not;
  * *tissue order*: a T1 has WM > GM > CSF. T2 and diffusion b0 have CSF brightest, FLAIR dark CSF but GM > WM,
    proton density GM > WM with bright CSF.

Thresholds and the measured values behind them are in :data:`THRESHOLDS` and ``benchmarks/scan_checks.py``.
A finding refuses the scan (:class:`ScanRefused`) unless the caller accepts unusual scans, in which case it becomes a
warning that travels with the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .geometry import resample
from .template import Template

#: Chosen from benchmarks/scan_checks.py (synthetic scans from the MNI template's tissue maps, 2 mm): brain scans of
#: every contrast measured eta^2 >= 0.29, non-brain images <= 0.08; tissue levels are in units of the brain's
#: (min, 99.5th percentile) range.
THRESHOLDS = {
    "min_extent_mm": 90.0,  # a brain is about 140 x 170 x 120 mm; fewer mm than this cannot hold it
    "max_spacing_factor": 2.0,  # a voxel side at most this many times the model grid's spacing
    "max_anisotropy": 4.0,  # largest voxel side / smallest: a 2D acquisition (0.45 x 0.45 x 7 mm) is not a 3D T1
    "min_coverage": 0.95,  # share of the template's brain that must lie inside the scan after registration
    "min_separation": 0.2,  # eta^2 below this: not a brain (or registration failed)
    "min_order_gap": 0.05,  # WM - GM must exceed this for a T1, and CSF must lie below GM
}

PURE = {"wm": 0.9, "gm": 0.6, "csf": 0.9}  # probability above which a template voxel counts as pure tissue
ACCEPT_HINT = "if you are sure it is a whole-brain T1, accept unusual scans (--accept-unusual-scan; Slicer: Advanced)"


class ScanRefused(ValueError):
    """The scan is not something the model can explain; ``findings`` are the reasons, one sentence each."""

    def __init__(self, findings: Sequence[str]):
        self.findings = list(findings)
        super().__init__("; ".join(self.findings) + f". ({ACCEPT_HINT})")


@dataclass
class Screening:
    """What the appearance check measured, and what it found unusual (empty: a T1 brain as far as it can tell)."""

    separation: float
    medians: dict[str, float]  # WM and GM medians; CSF: its darkest quarter (the ventricles' core)
    coverage: float = 1.0  # share of the template's brain inside the scan's field of view
    findings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "tissue_separation": self.separation,
            "tissue_levels": self.medians,
            "brain_coverage": self.coverage,
            "findings": self.findings,
        }


def geometry_findings(image: sitk.Image, grid_spacing: Sequence[float]) -> list[str]:
    """Header-only findings: too small a field of view, too coarse a voxel side."""
    findings = []
    spacing = np.array(image.GetSpacing(), dtype=float)
    size = np.array(image.GetSize())
    extent = spacing * size
    low = THRESHOLDS["min_extent_mm"]
    for axis, name in enumerate("ijk"):
        if extent[axis] < low:
            findings.append(
                f"the image covers only {extent[axis]:.0f} mm along its {name} axis ({size[axis]} voxels x "
                f"{spacing[axis]:g} mm); a whole-brain T1 covers at least {low:.0f} mm in every direction"
            )
    ratio = float(spacing.max() / spacing.min())
    if ratio > THRESHOLDS["max_anisotropy"]:
        findings.append(
            f"its voxels are {' x '.join(f'{s:g}' for s in spacing)} mm, {ratio:.1f} times longer than wide: a 2D "
            "acquisition, not a 3D T1 (use a 3D T1 with near-isotropic voxels)"
        )
    coarsest = float(min(grid_spacing)) * THRESHOLDS["max_spacing_factor"]
    if spacing.max() > coarsest:
        findings.append(
            f"its voxels are {' x '.join(f'{s:g}' for s in spacing)} mm; the model works at "
            f"{min(grid_spacing):g} mm and would invent the detail between slices thicker than {coarsest:g} mm "
            "(use a 3D T1 with thin slices)"
        )
    return findings


def _pure_tissue(template: Template) -> tuple[dict[str, np.ndarray], np.ndarray]:
    mask = template.array("mask") > 0.5
    return {k: (template.array(k) > p) & mask for k, p in PURE.items()}, mask


def appearance(native: sitk.Image, transform: sitk.Transform, template: Template) -> Screening:
    """Tissue separation and order of ``native`` seen through ``transform`` (template point -> native point)."""
    air = float(np.min(sitk.GetArrayViewFromImage(native)))  # outside the field of view: air, as in native_space.py
    on_template = sitk.GetArrayFromImage(resample(native, template.t1, transform, default=air))
    classes, mask = _pure_tissue(template)
    inside = sitk.Image(native.GetSize(), sitk.sitkUInt8) + 1
    inside.CopyInformation(native)
    seen = sitk.GetArrayViewFromImage(resample(inside, template.t1, transform, sitk.sitkNearestNeighbor)) > 0.5
    coverage = round(float(seen[mask].mean()), 4)
    brain = on_template[mask]
    low, high = float(brain.min()), float(np.percentile(brain, 99.5))
    unit = (on_template - low) / max(high - low, np.finfo(np.float32).tiny)
    values = {k: unit[m] for k, m in classes.items()}
    pooled = np.concatenate(list(values.values()))
    total = float(pooled.var())
    between = sum(v.size * (float(v.mean()) - float(pooled.mean())) ** 2 for v in values.values()) / pooled.size
    separation = between / total if total > 0 else 0.0
    # CSF: the darkest quarter of the pure-CSF voxels (the ventricles' core), so that small ventricles, whose
    # template voxels partly hold tissue, still read as CSF
    levels = {k: round(float(np.percentile(v, 25 if k == "csf" else 50)), 4) for k, v in values.items()}
    screening = Screening(round(separation, 4), levels, coverage)
    screening.findings = _appearance_findings(screening)
    return screening


def _appearance_findings(s: Screening) -> list[str]:
    if s.coverage < THRESHOLDS["min_coverage"]:
        return [
            f"after registration to the brain template the scan holds only {100 * s.coverage:.0f} % of the brain "
            "(the rest lies outside its field of view, and the model would invent it); give a scan of the whole "
            "brain"
        ]
    if s.separation < THRESHOLDS["min_separation"]:
        return [
            f"after registration to the brain template the image does not separate into brain tissues (correlation "
            f"ratio {s.separation:.2f}, brain scans measure about 0.4 or more): it does not look like a brain MRI, or "
            "its registration failed; check that it is a head scan with the whole brain in view and a correct "
            "orientation in its header"
        ]
    wm, gm, csf = (s.medians[k] for k in ("wm", "gm", "csf"))
    gap = THRESHOLDS["min_order_gap"]
    seen = f"(levels in the brain's range: white matter {wm:.2f}, grey matter {gm:.2f}, CSF {csf:.2f})"
    why = "the model was trained on T1-weighted scans and its counterfactual of another contrast would mean nothing"
    if csf > max(wm, gm):
        what = "a T2-weighted scan or a diffusion b0 (CSF is the brightest tissue)"
    elif gm > wm and csf < wm:
        what = "a FLAIR (grey matter brighter than white matter, CSF dark)"
    elif gm > wm:
        what = "a proton-density scan (grey matter brighter than white matter, CSF bright)"
    elif wm - gm < gap or gm <= csf:
        what = "not T1-weighted (a T1 has white matter clearly brighter than grey matter, and CSF darkest)"
    else:
        return []
    return [f"the tissue contrast looks like {what} {seen}; {why}"]
