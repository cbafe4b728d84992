"""A simulated Alzheimer cohort with ground truth, built on the real MNI anatomy.

Every subject is the template passed through, in this order:

1. **disease** of severity s (0 for CN): a deformation that enlarges the ventricles (temporal horns weighted up) and
   shrinks the hippocampi, plus a tissue change that moves grey matter toward CSF intensity in a temporo-parietal
   cortical band (thinner cortex, wider sulci). CN subjects get s = 0 but a natural ventricle size of their own
   (a signed ventricle deformation of at most ``natural_ventricle``), so the classes overlap;
2. **individual anatomy**: a smooth random displacement (its Jacobian stays positive: a diffeomorphism);
3. **acquisition**: global intensity scale, a smooth multiplicative bias field and Gaussian noise.

The *true counterfactual* runs the same chain with the same individual, the same acquisition and the same noise,
with the other class's severity (CN -> AD: ``counterfactual_severity``; AD -> CN: 0). Their difference is the true
change map. Volumes are written on the requested grid (the model grid by default), in MNI space: they count as
already preprocessed.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..imaging.geometry import anti_alias, model_grid, ras_to_lps, resample
from .template import Template, load_template

#: Regions in MNI RAS millimetres: centre and semi-axes of ellipsoids.
VENTRICLE_REGION = ((0.0, -10.0, 8.0), (32.0, 42.0, 30.0))
HIPPOCAMPI = (((-28.0, -22.0, -14.0), (9.0, 18.0, 9.0)), ((28.0, -22.0, -14.0), (9.0, 18.0, 9.0)))
TEMPORAL_HORNS = (((-30.0, -12.0, -16.0), (12.0, 18.0, 12.0)), ((30.0, -12.0, -16.0), (12.0, 18.0, 12.0)))
CORTEX_REGIONS = (
    ((-48.0, -20.0, -10.0), (25.0, 45.0, 25.0)),  # left temporal lobe
    ((48.0, -20.0, -10.0), (25.0, 45.0, 25.0)),  # right temporal lobe
    ((0.0, -60.0, 40.0), (55.0, 30.0, 30.0)),  # parietal lobes and precuneus
)


@dataclass(frozen=True)
class SimulationConfig:
    """Knobs of the simulated cohort; defaults give a clear but overlapping AD effect."""

    ad_fraction: float = 0.5
    severity_range: tuple[float, float] = (0.4, 1.0)  # AD severities are uniform in this range
    counterfactual_severity: float = 0.7  # severity given to a CN subject's AD counterfactual
    ventricle_push_mm: float = 3.0  # ventricle expansion at severity 1 (peak displacement, mm)
    hippocampus_pull_mm: float = 2.0  # hippocampal shrinkage at severity 1 (peak displacement, mm)
    cortex_loss: float = 0.35  # share of GM contrast lost in the cortical band at severity 1
    natural_ventricle: float = 0.5  # CN subjects' own ventricle size, as a signed severity in [-n, n]
    individual_mm: float = 2.5  # rms of the individual displacement (mm)
    individual_smoothness_mm: float = 12.0
    scale_range: tuple[float, float] = (0.85, 1.15)
    bias_strength: float = 0.1
    noise_range: tuple[float, float] = (0.01, 0.03)


@dataclass
class Subject:
    subject: str
    label: str
    severity: float
    counterfactual_label: str
    counterfactual_severity: float
    ventricle_ml: float
    counterfactual_ventricle_ml: float
    image: str = ""
    counterfactual: str = ""
    change: str = ""


def _ellipsoid_weight(reference: sitk.Image, regions, softness_mm: float = 4.0) -> np.ndarray:
    """Smooth (z, y, x) weight in [0, 1] that is 1 inside any of the ellipsoids."""
    k, j, i = np.indices(reference.GetSize()[::-1])
    idx = np.stack([i, j, k], axis=-1).reshape(-1, 3).astype(float)
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    points = np.array(reference.GetOrigin()) + (idx * np.array(reference.GetSpacing())) @ direction.T
    weight = np.zeros(len(points))
    for centre, axes in regions:
        d = np.sqrt((((points - ras_to_lps(centre)) / np.array(axes)) ** 2).sum(axis=1))
        weight = np.maximum(weight, np.clip((1.0 - d) * min(axes) / softness_mm + 0.5, 0.0, 1.0))
    return weight.reshape(reference.GetSize()[::-1])


def _image_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(
        np.ascontiguousarray(array, dtype=np.float64 if array.ndim == 4 else np.float32), isVector=array.ndim == 4
    )
    img.CopyInformation(reference)
    return img


def _gradient_field(potential: np.ndarray, reference: sitk.Image, peak_mm: float) -> np.ndarray:
    """(z, y, x, 3) displacement along the physical gradient of ``potential``, scaled so its peak is ``peak_mm``."""
    spacing = reference.GetSpacing()
    gz, gy, gx = np.gradient(potential, spacing[2], spacing[1], spacing[0])
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    field = np.stack([gx, gy, gz], axis=-1) @ direction.T  # index-axis gradient -> physical (LPS) vector
    peak = np.linalg.norm(field, axis=-1).max()
    return field * (peak_mm / peak if peak > 0 else 0.0)


def _smooth(array: np.ndarray, reference: sitk.Image, sigma_mm: float) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(_image_like(array, reference), sigma_mm))


@dataclass
class _Anatomy:
    """Per-template quantities computed once: unit disease fields, regions and intensity levels."""

    t1: np.ndarray
    gm: np.ndarray
    mask: np.ndarray
    ventricles: np.ndarray
    ventricle_field: np.ndarray  # (z, y, x, 3), peak 1 mm, pointing into the ventricles
    hippocampus_field: np.ndarray  # (z, y, x, 3), peak 1 mm, pointing out of the hippocampi
    cortex_weight: np.ndarray
    csf_level: float
    taper: np.ndarray  # 1 in and around the brain, 0 at the image border
    reference: sitk.Image


def _anatomy(template: Template) -> _Anatomy:
    ref = template.t1
    t1, gm, csf = template.array("t1"), template.array("gm"), template.array("csf")
    mask = template.array("mask") > 0.5
    deep = sitk.GetArrayFromImage(sitk.BinaryErode(template.mask > 0.5, [5, 5, 5])) > 0  # 10 mm inside the brain
    region = _ellipsoid_weight(ref, (VENTRICLE_REGION,)) > 0.5
    horns = _ellipsoid_weight(ref, TEMPORAL_HORNS) > 0.5
    ventricles = (csf > 0.5) & ((region & deep) | (horns & mask))
    labels = sitk.GetArrayFromImage(
        sitk.RelabelComponent(sitk.ConnectedComponent(_image_like(ventricles, ref) > 0), minimumObjectSize=20)
    )
    ventricles = labels > 0
    potential = _smooth(ventricles.astype(np.float32) * (1.0 + 1.5 * horns), ref, 4.0)
    ventricle_field = _gradient_field(potential, ref, 1.0)
    hippo = _ellipsoid_weight(ref, HIPPOCAMPI) * (gm > 0.3)
    hippocampus_field = -_gradient_field(_smooth(hippo.astype(np.float32), ref, 4.0), ref, 1.0)
    cortex = _ellipsoid_weight(ref, CORTEX_REGIONS, softness_mm=15.0) * gm * mask
    csf_level = float(np.median(t1[(csf > 0.9) & mask]))
    taper = np.clip(_smooth(mask.astype(np.float32), ref, 8.0) * 2.0, 0.0, 1.0)
    return _Anatomy(t1, gm, mask, ventricles, ventricle_field, hippocampus_field, cortex, csf_level, taper, ref)


def _warp(array: np.ndarray, field: np.ndarray, reference: sitk.Image, nearest: bool = False) -> np.ndarray:
    """``array`` sampled at x + field(x) (pull-back), on the same grid."""
    transform = sitk.DisplacementFieldTransform(_image_like(field, reference))
    out = resample(
        _image_like(array, reference), reference, transform, sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    )
    return sitk.GetArrayFromImage(out)


def _compose(inner: np.ndarray, outer: np.ndarray, reference: sitk.Image) -> np.ndarray:
    """Displacement of x -> x + inner(x) followed by y -> y + outer(y)."""
    moved = np.stack([_warp(outer[..., c], inner, reference) for c in range(3)], axis=-1)
    return inner + moved


def min_jacobian(field: np.ndarray, reference: sitk.Image) -> float:
    """Smallest Jacobian determinant of x -> x + field(x): positive means no folding."""
    jac = sitk.DisplacementFieldJacobianDeterminant(_image_like(field, reference))
    return float(sitk.GetArrayFromImage(jac).min())


class CohortSimulator:
    """Seeded generator of subjects with their true counterfactuals; see the module docstring."""

    def __init__(self, config: SimulationConfig | None = None, template: Template | None = None):
        self.config = config or SimulationConfig()
        self.anatomy = _anatomy(template or load_template())
        ref = self.anatomy.reference
        self.voxel_ml = float(np.prod(ref.GetSpacing())) / 1000.0

    def _disease(self, severity: float, natural: float, individual: np.ndarray):
        """Image and ventricle mask, in subject space, of one severity for one individual."""
        a, c = self.anatomy, self.config
        push = c.ventricle_push_mm * (severity + natural)
        field = push * a.ventricle_field + c.hippocampus_pull_mm * severity * a.hippocampus_field
        tissue = a.t1 - c.cortex_loss * severity * a.cortex_weight * np.clip(a.t1 - a.csf_level, 0, None)
        total = _compose(individual, field, a.reference)
        image = _warp(tissue, total, a.reference)
        ventricles = _warp(a.ventricles.astype(np.float32), total, a.reference) > 0.5
        return image, ventricles, total

    def _individual(self, rng: np.random.Generator) -> np.ndarray:
        """Smooth random displacement, tapered to zero away from the head (the recursive Gaussian misbehaves at the
        image border), scaled to ``individual_mm`` rms inside the brain, and shrunk if it would fold anywhere."""
        a, c = self.anatomy, self.config
        raw = rng.standard_normal(a.t1.shape + (3,)).astype(np.float32)
        field = np.stack([_smooth(raw[..., d], a.reference, c.individual_smoothness_mm) for d in range(3)], axis=-1)
        field *= a.taper[..., None]
        rms = np.sqrt((field[a.mask] ** 2).sum(-1).mean())
        field = field * (c.individual_mm / rms if rms > 0 else 0.0)
        while min_jacobian(field, a.reference) < 0.2:  # guarantee a diffeomorphism: never fold, shrink instead
            field = field * 0.7
        return field

    def subject(self, index: int, seed: int = 0, label: str | None = None):
        """(Subject record, image, counterfactual, change map) as (z, y, x) arrays on the template grid."""
        c = self.config
        rng = np.random.default_rng([seed, index])
        if label is None:
            label = "AD" if rng.random() < c.ad_fraction else "CN"
        severity = float(rng.uniform(*c.severity_range)) if label == "AD" else 0.0
        natural = float(rng.uniform(-c.natural_ventricle, c.natural_ventricle)) if label == "CN" else 0.0
        individual = self._individual(rng)
        scale = rng.uniform(*c.scale_range)
        a = self.anatomy
        bias_raw = rng.standard_normal(a.t1.shape).astype(np.float32)
        bias = np.exp(
            c.bias_strength
            * _smooth(bias_raw, a.reference, 30.0)
            / max(1e-6, _smooth(bias_raw, a.reference, 30.0).std())
            / 3
        )
        noise = rng.standard_normal(a.t1.shape).astype(np.float32) * rng.uniform(*c.noise_range)
        other_label = "CN" if label == "AD" else "AD"
        other_severity = 0.0 if label == "AD" else c.counterfactual_severity

        def acquire(tissue):
            return np.where(a.mask | (tissue > 0), tissue * scale * bias + noise, 0.0).astype(np.float32)

        image, vent, total = self._disease(severity, natural, individual)
        cf, cf_vent, _ = self._disease(other_severity, natural if label == "CN" else 0.0, individual)
        body = _warp(a.mask.astype(np.float32), total, a.reference) > 0.5
        image, cf = acquire(image) * body, acquire(cf) * body
        record = Subject(
            subject=f"sim-{seed:04d}-{index:05d}",
            label=label,
            severity=round(severity, 4),
            counterfactual_label=other_label,
            counterfactual_severity=other_severity,
            ventricle_ml=round(float(vent.sum()) * self.voxel_ml, 3),
            counterfactual_ventricle_ml=round(float(cf_vent.sum()) * self.voxel_ml, 3),
        )
        return record, image, cf, cf - image


def write_cohort(
    out: str | Path,
    n: int,
    grid: Sequence[int] | None = (80, 96, 80),
    seed: int = 0,
    config: SimulationConfig | None = None,
    on_subject: Callable[[int, Subject], None] | None = None,
) -> Path:
    """Write ``n`` subjects (image, true counterfactual, true change map as NIfTI) and ``manifest.csv`` to ``out``.

    ``grid`` is a (z, y, x) model grid (the paper crop at that size); None keeps the template's 2 mm grid.
    """
    out = Path(out)
    if n < 1:
        raise ValueError(f"the cohort needs at least one subject, got n={n}")
    out.mkdir(parents=True, exist_ok=True)
    sim = CohortSimulator(config)
    ref = sim.anatomy.reference
    target = model_grid(grid, ref) if grid is not None else None
    rows = []
    for i in range(n):
        record, *volumes = sim.subject(i, seed)
        for kind, array in zip(("image", "counterfactual", "change"), volumes):
            img = _image_like(array, ref)
            if target is not None:
                img = resample(anti_alias(img, target.GetSpacing()), target)
            path = out / f"{record.subject}_{kind}.nii.gz"
            sitk.WriteImage(img, str(path), useCompression=True)
            setattr(record, kind, path.name)
        rows.append(asdict(record))
        if on_subject is not None:
            on_subject(i + 1, record)
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def ventricle_summary(manifest: str | Path) -> list[str]:
    """Lines reporting a written cohort's ventricle volume per class and the effect size (Cohen's d, pooled sd)."""
    import statistics

    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    volumes = {c: [float(r["ventricle_ml"]) for r in rows if r["label"] == c] for c in ("CN", "AD")}
    lines = []
    for c, v in volumes.items():
        if v:
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            lines.append(f"{c}: n={len(v)} ventricle volume {statistics.mean(v):.1f} +- {sd:.1f} mL")
    if all(len(v) > 1 for v in volumes.values()):
        pooled = ((statistics.variance(volumes["CN"]) + statistics.variance(volumes["AD"])) / 2) ** 0.5
        d = (statistics.mean(volumes["AD"]) - statistics.mean(volumes["CN"])) / pooled
        lines.append(f"Cohen's d (AD vs CN ventricle volume): {d:.2f}")
    return lines
