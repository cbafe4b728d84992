"""A simulated Alzheimer cohort with ground truth, built on real brain anatomies.

Every subject is one base anatomy (data/anatomies.py: six real brains from packages; cohort v1 used the ICBM
template alone) passed through, in this order:

1. **age** (cohort v2): ageing from 60 to 90 years enlarges the ventricles and thins the cortex everywhere, in CN and
   AD alike, so that a large ventricle alone does not say AD;
2. **disease** of continuous severity s (0 for CN): a deformation that enlarges the ventricles (temporal horns
   weighted up) and shrinks the hippocampi, plus a tissue change that moves grey matter toward CSF intensity in the
   temporal and parietal cortex (thinner cortex, wider sulci). CN subjects get s = 0 but a natural ventricle size of
   their own (a signed ventricle deformation of at most ``natural_ventricle``);
3. **individual anatomy**: a smooth random displacement of several mm, with head-size scaling (its Jacobian stays
   positive: a diffeomorphism);
4. **acquisition**: grey/white contrast (a gamma), blur (isotropic, or thick slices along one axis), imperfect skull
   stripping (a rim eroded, or a bright shell left), global intensity scale, a smooth multiplicative bias field and
   Gaussian noise.

The *true counterfactual* runs the same chain with the same base, age, individual, acquisition and noise, with the
other class's severity (CN -> AD: ``counterfactual_severity``; AD -> CN: 0): it changes the disease only. Their
difference is the true change map. Volumes are written on the requested grid (the model grid by default), in MNI
space: they count as already preprocessed.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..imaging.geometry import anti_alias, model_grid, ras_to_lps, resample
from ..imaging.template import Template, load_template
from .anatomies import REGIONS, Anatomy, load_anatomy

#: The age effect's scale: none at 60 years, the full ``age_ventricle_mm`` and ``age_cortex_loss`` at 90.
AGEING_FROM, AGEING_TO = 60.0, 90.0
#: Regions in MNI RAS millimetres: centre and semi-axes of ellipsoids.
VENTRICLE_REGION = ((0.0, -10.0, 8.0), (32.0, 42.0, 30.0))
HIPPOCAMPI = (((-28.0, -22.0, -14.0), (9.0, 18.0, 9.0)), ((28.0, -22.0, -14.0), (9.0, 18.0, 9.0)))
TEMPORAL_HORNS = (((-30.0, -12.0, -16.0), (12.0, 18.0, 12.0)), ((30.0, -12.0, -16.0), (12.0, 18.0, 12.0)))
CORTEX_REGIONS = (
    ((-48.0, -20.0, -10.0), (25.0, 45.0, 25.0)),  # left temporal lobe
    ((48.0, -20.0, -10.0), (25.0, 45.0, 25.0)),  # right temporal lobe
    ((0.0, -60.0, 40.0), (55.0, 30.0, 30.0)),  # parietal lobes and precuneus
)


#: Regions of a v3 disease, each per hemisphere: the hippocampus (pulled in), the temporal and the parietal cortex
#: (thinned: intensity toward CSF, and, with ``cortex_thinning_mm``, displaced).
DISEASE_REGIONS = ("hippocampus", "temporal", "parietal")


@dataclass(frozen=True)
class Subtype:
    """One AD subtype: its share of AD subjects and the weight of each of DISEASE_REGIONS (1 = typical)."""

    name: str
    frequency: float
    hippocampus: float
    temporal: float
    parietal: float


#: The subtypes of Murray et al. (Lancet Neurol 2011; the neurofibrillary tangle distribution of 889 AD brains) with
#: their shares there: typical (75 %), limbic-predominant (14 %: hippocampus and medial temporal lobe, association
#: cortex spared) and hippocampal-sparing (11 %: association cortex, hippocampus spared). The regional weights are
#: ours: they say which regions a subtype spares and which it hits harder, not a measured magnitude.
AD_SUBTYPES = (
    Subtype("typical", 0.75, 1.0, 1.0, 1.0),
    Subtype("limbic-predominant", 0.14, 1.6, 1.0, 0.3),
    Subtype("hippocampal-sparing", 0.11, 0.3, 1.0, 1.8),
)


@dataclass(frozen=True)
class SimulationConfig:
    """Knobs of the simulated cohort. The defaults are cohort v3: cohort v2 (six anatomies, age, acquisition variety;
    tuned so that the embedded-size classifier is not perfect: docs/data.md) with a disease of each subject's own
    (subtype, regional weights, asymmetry, geometric cortical thinning). :data:`COHORT_V2` and :data:`COHORT_V1` are
    kept so that the embedded models' training data and the bundled sample can be made again bit for bit."""

    anatomies: tuple[str, ...] = ("icbm2009a", "colin27", "mni152nlin6", "oasis", "cit168", "cat12")
    regions: str = "atlas"  # "atlas": each base's own labels; "ellipsoids": v1's boxes in MNI coordinates
    age_range: tuple[float, float] | None = (60.0, 90.0)  # None: no age effect (v1)
    age_ventricle_mm: float = 2.0  # ventricle expansion from 60 to 90 years (peak displacement, mm)
    age_cortex_loss: float = 0.15  # share of GM contrast lost everywhere in the cortex from 60 to 90 years
    head_scale_range: tuple[float, float] = (0.94, 1.06)
    gamma_range: tuple[float, float] = (0.8, 1.25)  # grey/white contrast: intensity ** gamma
    blur_range_mm: tuple[float, float] = (0.0, 1.0)  # Gaussian sigma of the acquisition (isotropic)
    thick_slice_fraction: float = 0.3  # share of scans with thick slices (sigma 1.3 mm more along one axis)
    strip_error_fraction: float = 0.3  # share of scans whose skull stripping erodes or leaves a bright rim
    ad_fraction: float = 0.5
    severity_range: tuple[float, float] = (0.2, 1.0)  # AD severities are uniform in this range
    counterfactual_severity: float = 0.7  # severity given to a CN subject's AD counterfactual
    # The disease's strength: 1.5 x cohort v1's, chosen from benchmarks/cohort_difficulty.py's curve (held-out
    # anatomy accuracy of the embedded-size classifier, 600 steps: 0.575 at 0.5x, 0.625 at 1x, 0.85 at 1.5x v1's)
    ventricle_push_mm: float = 4.5  # ventricle expansion at severity 1 (peak displacement, mm)
    # hippocampal shrinkage at severity 1 (peak displacement, mm); cohort v2's 3 mm shrank the hippocampi by 40-50 %
    # at the higher severities, twice what is seen in AD, hence v3's smaller pull (benchmarks/world_choice.py)
    hippocampus_pull_mm: float = 1.8
    cortex_loss: float = 0.525  # share of GM contrast lost in the cortical band at severity 1
    natural_ventricle: float = 0.5  # CN subjects' own ventricle size, as a signed severity in [-n, n]
    individual_mm: float = 4.0  # rms of the individual displacement (mm)
    individual_smoothness_mm: float = 16.0
    scale_range: tuple[float, float] = (0.85, 1.15)
    bias_strength: float = 0.1
    noise_range: tuple[float, float] = (0.01, 0.03)
    # --- cohort v3: a disease of its own per subject (None / 0 switch each off: cohort v2) ---
    subtypes: tuple[Subtype, ...] | None = AD_SUBTYPES  # AD subtypes with their shares and regional weights
    # How much each subject's AD is its own, chosen from benchmarks/world_choice.py's curve on the trained anatomies
    # (benchmarks/results/world_choice.json): the smallest variety at which the subject-agnostic atlas explains well
    # under half of the true AD -> CN change on the model grid and another subject's change nearly nothing.
    region_jitter: float = 0.45  # sd of each region's log-weight around its subtype's, per subject and hemisphere
    asymmetry: float = 0.45  # left-right factor a ~ U(-x, x): the left hemisphere's regions x (1 + a), right (1 - a)
    cortex_thinning_mm: float = 1.0  # grey matter displaced toward the white matter at severity 1 (peak, mm)
    natural_ventricle_ad: bool = True  # AD subjects too have a ventricle size of their own (anatomy, not disease)


#: Cohort v2: one deterministic disease pattern per base anatomy, scaled by severity (the embedded models' data).
COHORT_V2 = SimulationConfig(
    hippocampus_pull_mm=3.0,
    subtypes=None,
    region_jitter=0.0,
    asymmetry=0.0,
    cortex_thinning_mm=0.0,
    natural_ventricle_ad=False,
)

#: The first cohort: the ICBM template alone, ellipsoid regions, no age, no acquisition variety beyond scale, bias
#: and noise (the embedded model of this release was trained on it; Resources/Sample comes from it).
COHORT_V1 = SimulationConfig(
    anatomies=("icbm2009a",),
    regions="ellipsoids",
    age_range=None,
    head_scale_range=(1.0, 1.0),
    gamma_range=(1.0, 1.0),
    blur_range_mm=(0.0, 0.0),
    thick_slice_fraction=0.0,
    strip_error_fraction=0.0,
    severity_range=(0.4, 1.0),
    subtypes=None,
    region_jitter=0.0,
    asymmetry=0.0,
    cortex_thinning_mm=0.0,
    natural_ventricle_ad=False,
    ventricle_push_mm=3.0,
    hippocampus_pull_mm=2.0,
    cortex_loss=0.35,
    individual_mm=2.5,
    individual_smoothness_mm=12.0,
)


@dataclass
class Subject:
    subject: str
    label: str
    severity: float
    counterfactual_label: str
    counterfactual_severity: float
    ventricle_ml: float
    counterfactual_ventricle_ml: float
    anatomy: str = "icbm2009a"
    age: float | None = None  # years; None in cohort v1 (no age effect)
    image: str = ""
    counterfactual: str = ""
    change: str = ""
    hippocampus_ml: float | None = None  # both hippocampi, in the scan and in its true counterfactual
    counterfactual_hippocampus_ml: float | None = None
    subtype: str = ""  # cohort v3: the AD subtype of the AD side (the scan's, or the counterfactual's for CN -> AD)
    asymmetry: float | None = None  # cohort v3: the AD side's left-right factor
    log_jacobian: str = ""  # the true volume change from scan to counterfactual, log of the Jacobian ratio
    labels: str = ""  # the scan's own regions (the base's labels through its warps); none for cohort v1


def _ellipsoid_weight(reference: sitk.Image, regions, softness_mm: float = 4.0) -> np.ndarray:
    """Smooth (z, y, x) weight in [0, 1] that is 1 inside any of the ellipsoids."""
    points = _points(reference).reshape(-1, 3)
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
    """Per-base quantities computed once: unit disease and age fields, regions and intensity levels."""

    name: str
    t1: np.ndarray
    gm: np.ndarray
    mask: np.ndarray
    ventricles: np.ndarray
    ventricle_field: np.ndarray  # (z, y, x, 3), peak 1 mm, pointing into the ventricles
    hippocampus_field: np.ndarray  # (z, y, x, 3), peak 1 mm, pointing out of the hippocampi
    cortex_weight: np.ndarray  # where the disease thins the cortex (temporal and parietal)
    ageing_weight: np.ndarray  # where age thins it (all of the cortex)
    csf_level: float
    taper: np.ndarray  # 1 in and around the brain, 0 at the image border
    centre: np.ndarray  # physical (LPS) centroid of the brain: head-size scaling keeps it in place
    reference: sitk.Image
    hippocampi: np.ndarray | None = None  # where the hippocampi are (their volume is measured through the warps)
    labels: np.ndarray | None = None  # the base's regions (data/anatomies.REGIONS); None for v1's ellipsoids


def _anatomy(base: Template | Anatomy, regions: str = "ellipsoids", name: str = "icbm2009a") -> _Anatomy:
    """``regions`` "ellipsoids": v1's boxes in MNI coordinates cut by the tissue maps; "atlas": the base's own
    ventricle, hippocampus and cortex labels (data/anatomies.py)."""
    ref = base.t1
    t1, gm, csf = base.array("t1"), base.array("gm"), base.array("csf")
    mask = base.array("mask") > 0.5
    horns = _ellipsoid_weight(ref, TEMPORAL_HORNS) > 0.5
    if regions == "atlas":
        labels = sitk.GetArrayFromImage(base.labels)
        ventricles = labels == REGIONS["ventricles"]
        hippo = (labels == REGIONS["hippocampi"]).astype(np.float32)
        cortical = np.isin(labels, [REGIONS["temporal cortex"], REGIONS["parietal cortex"]])
        cortex = _smooth(cortical.astype(np.float32), ref, 3.0) * gm * mask
        everywhere = np.isin(labels, [REGIONS[k] for k in ("temporal cortex", "parietal cortex", "other cortex")])
        ageing = _smooth(everywhere.astype(np.float32), ref, 2.0) * gm * mask
    else:
        deep = sitk.GetArrayFromImage(sitk.BinaryErode(base.mask > 0.5, [5, 5, 5])) > 0  # 10 mm inside the brain
        region = _ellipsoid_weight(ref, (VENTRICLE_REGION,)) > 0.5
        ventricles = (csf > 0.5) & ((region & deep) | (horns & mask))
        components = sitk.ConnectedComponent(_image_like(ventricles, ref) > 0)
        ventricles = sitk.GetArrayFromImage(sitk.RelabelComponent(components, minimumObjectSize=20)) > 0
        hippo = _ellipsoid_weight(ref, HIPPOCAMPI) * (gm > 0.3)
        cortex = _ellipsoid_weight(ref, CORTEX_REGIONS, softness_mm=15.0) * gm * mask
        ageing = gm * mask
    # The push spreads from the ventricles' walls over this scale: a base's real ventricles are thin, and at v1's 4 mm
    # the largest push (severe disease, natural variation and age together, 6.5 mm) folded them (Jacobian -1.1);
    # at 8 mm it stays above 0.3 on every base (Testing/Python/test_simulator.py).
    spread = 8.0 if regions == "atlas" else 4.0
    potential = _smooth(ventricles.astype(np.float32) * (1.0 + 1.5 * horns), ref, spread)
    ventricle_field = _gradient_field(potential, ref, 1.0)
    hippocampus_field = -_gradient_field(_smooth(hippo.astype(np.float32), ref, 4.0), ref, 1.0)
    csf_level = float(np.median(t1[(csf > 0.9) & mask])) if ((csf > 0.9) & mask).any() else float(t1[mask].min())
    taper = np.clip(_smooth(mask.astype(np.float32), ref, 8.0) * 2.0, 0.0, 1.0)
    k, j, i = np.nonzero(mask)
    centre = np.array(ref.TransformContinuousIndexToPhysicalPoint([float(i.mean()), float(j.mean()), float(k.mean())]))
    return _Anatomy(
        name,
        t1,
        gm,
        mask,
        ventricles,
        ventricle_field,
        hippocampus_field,
        cortex,
        ageing,
        csf_level,
        taper,
        centre,
        ref,
        np.asarray(hippo) > 0.5,
        labels if regions == "atlas" else None,
    )


@dataclass
class _Regions:
    """A base's per-hemisphere disease regions (cohort v3), keyed (region, "left" | "right"): a displacement of peak
    1 mm (the hippocampus pulled in; the cortex drawn toward the white matter, widening the sulci) and, for the
    cortex, where its intensity moves toward CSF."""

    fields: dict[tuple[str, str], np.ndarray]
    weights: dict[tuple[str, str], np.ndarray]


def _regions(a: _Anatomy, base: Anatomy) -> _Regions:
    ref = base.t1
    labels = sitk.GetArrayFromImage(base.labels)
    tissue = base.array("gm") + base.array("wm")
    x = _points(ref)[..., 0]  # LPS: the left hemisphere has x > 0; a 4 mm ramp across the midline
    sides = {"left": np.clip(0.5 + x / 4.0, 0.0, 1.0), "right": np.clip(0.5 - x / 4.0, 0.0, 1.0)}
    fields, weights = {}, {}
    for side, hemisphere in sides.items():
        hippo = a.hippocampi.astype(np.float32) * hemisphere
        fields["hippocampus", side] = -_gradient_field(_smooth(hippo, ref, 4.0), ref, 1.0)
        for region, label in (("temporal", "temporal cortex"), ("parietal", "parietal cortex")):
            where = _smooth((labels == REGIONS[label]).astype(np.float32), ref, 3.0) * hemisphere
            weights[region, side] = where * a.gm * a.mask
            # pull-back: x shows x + u; u pointing away from the tissue shows at x what lay further out, so the sulcal
            # CSF moves in and the cortex thins (the hippocampus shrinks the same way)
            fields[region, side] = -_gradient_field(_smooth(where * tissue, ref, 3.0), ref, 1.0)
    return _Regions(fields, weights)


@dataclass(frozen=True)
class Profile:
    """One subject's AD (cohort v3): its subtype, left-right factor and amplitude per (region, hemisphere)."""

    subtype: str
    asymmetry: float
    amplitudes: dict[tuple[str, str], float]
    ventricles: float = 1.0  # the ventricles' enlargement, relative to the cohort's ``ventricle_push_mm``


#: A single region's amplitude is capped here: beyond it the pulled hippocampus folds on the 2 mm grid.
MAX_AMPLITUDE = 2.0


def typical_profile() -> Profile:
    return Profile("typical", 0.0, {(r, side): 1.0 for r in DISEASE_REGIONS for side in ("left", "right")}, 1.0)


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


def _log_jacobian(field: np.ndarray, reference: sitk.Image) -> np.ndarray:
    jac = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(_image_like(field, reference)))
    return np.log(np.clip(jac, 1e-3, None))


def min_jacobian(field: np.ndarray, reference: sitk.Image) -> float:
    """Smallest Jacobian determinant of x -> x + field(x): positive means no folding."""
    jac = sitk.DisplacementFieldJacobianDeterminant(_image_like(field, reference))
    return float(sitk.GetArrayFromImage(jac).min())


class CohortSimulator:
    """Seeded generator of subjects with their true counterfactuals; see the module docstring."""

    def __init__(self, config: SimulationConfig | None = None, template: Template | None = None):
        self.config = config or SimulationConfig()
        if not self.config.anatomies:
            raise ValueError("the cohort needs at least one base anatomy")
        self._template = template
        self._bases: dict[str, _Anatomy] = {}
        self._regions: dict[str, _Regions] = {}
        if self.config.subtypes is not None and self.config.regions != "atlas":
            raise ValueError("AD subtypes need the anatomies' own region labels (regions='atlas')")
        self.anatomy = self.base(self.config.anatomies[0])
        ref = self.anatomy.reference
        self.voxel_ml = float(np.prod(ref.GetSpacing())) / 1000.0

    def base(self, name: str) -> _Anatomy:
        """One base anatomy's prepared fields (computed on first use)."""
        if name not in self._bases:
            if self.config.regions == "ellipsoids":
                if name != "icbm2009a":
                    raise ValueError("ellipsoid regions are defined on the ICBM template only (cohort v1)")
                self._bases[name] = _anatomy(self._template or load_template(), "ellipsoids", name)
            else:
                self._bases[name] = _anatomy(load_anatomy(name), "atlas", name)
        return self._bases[name]

    def regions(self, name: str) -> _Regions:
        """A base's per-hemisphere disease regions (cohort v3; computed on first use)."""
        if name not in self._regions:
            self._regions[name] = _regions(self.base(name), load_anatomy(name))
        return self._regions[name]

    def profile(self, rng: np.random.Generator) -> Profile:
        """A subject's own AD: a subtype by its share, each region's weight jittered per hemisphere (log-normal), a
        left-right factor; every number drawn whatever the settings, so that no knob shifts another's draw."""
        c = self.config
        shares = np.array([s.frequency for s in c.subtypes], dtype=np.float64)
        subtype = c.subtypes[int(rng.choice(len(shares), p=shares / shares.sum()))]
        jitter = rng.standard_normal((len(DISEASE_REGIONS), 2))
        asymmetry = float(rng.uniform(-1.0, 1.0)) * c.asymmetry
        amplitudes = {}
        for r, region in enumerate(DISEASE_REGIONS):
            for h, (side, sign) in enumerate((("left", 1.0), ("right", -1.0))):
                amplitude = getattr(subtype, region) * np.exp(c.region_jitter * jitter[r, h]) * (1 + sign * asymmetry)
                amplitudes[region, side] = float(min(MAX_AMPLITUDE, amplitude))
        ventricles = float(min(MAX_AMPLITUDE, np.exp(c.region_jitter * rng.standard_normal())))
        return Profile(subtype.name, round(asymmetry, 4), amplitudes, ventricles)

    def _disease(
        self,
        a: _Anatomy,
        severity: float,
        natural: float,
        ageing: float,
        individual: np.ndarray,
        profile: Profile | None = None,
    ):
        """Image, ventricle mask, hippocampus mask and the whole displacement, in subject space, of one severity for
        one individual of one age; ``profile`` (cohort v3) shapes the disease by region and hemisphere."""
        c = self.config
        field = self.disease_field(a, severity, natural, ageing, profile)
        loss = a.cortex_weight if profile is None else self._cortex_loss_weight(a, profile)
        tissue = a.t1 - c.cortex_loss * severity * loss * np.clip(a.t1 - a.csf_level, 0, None)
        if ageing:
            tissue = tissue - c.age_cortex_loss * ageing * a.ageing_weight * np.clip(a.t1 - a.csf_level, 0, None)
        total = _compose(individual, field, a.reference)
        image = _warp(tissue, total, a.reference)
        ventricles = _warp(a.ventricles.astype(np.float32), total, a.reference) > 0.5
        hippocampi = _warp(a.hippocampi.astype(np.float32), total, a.reference) > 0.5
        return image, ventricles, hippocampi, total

    def _cortex_loss_weight(self, a: _Anatomy, profile: Profile) -> np.ndarray:
        weights = self.regions(a.name).weights
        return sum(profile.amplitudes[key] * w for key, w in weights.items())

    def disease_field(
        self, a: _Anatomy, severity: float, natural: float, ageing: float, profile: Profile | None = None
    ) -> np.ndarray:
        """The displacement of disease and age: ventricles pushed out, hippocampi pulled in; with a ``profile``
        (cohort v3) each hemisphere's hippocampus and cortex by its own amplitude, the cortex thinned too."""
        c = self.config
        push = c.ventricle_push_mm * (severity + natural) + c.age_ventricle_mm * ageing
        if profile is None:
            return push * a.ventricle_field + c.hippocampus_pull_mm * severity * a.hippocampus_field
        push = push + c.ventricle_push_mm * severity * (profile.ventricles - 1.0)
        field = push * a.ventricle_field
        for (region, side), unit in self.regions(a.name).fields.items():
            peak = c.hippocampus_pull_mm if region == "hippocampus" else c.cortex_thinning_mm
            field = field + peak * severity * profile.amplitudes[region, side] * unit
        return field

    def _individual(self, rng: np.random.Generator, a: _Anatomy | None = None, scale: float = 1.0) -> np.ndarray:
        """Smooth random displacement, tapered to zero away from the head (the recursive Gaussian misbehaves at the
        image border), scaled to ``individual_mm`` rms inside the brain, with a head-size ``scale`` about the brain's
        centre, and shrunk if it would fold anywhere."""
        a, c = a or self.anatomy, self.config
        raw = rng.standard_normal(a.t1.shape + (3,)).astype(np.float32)
        field = np.stack([_smooth(raw[..., d], a.reference, c.individual_smoothness_mm) for d in range(3)], axis=-1)
        field *= a.taper[..., None]
        rms = np.sqrt((field[a.mask] ** 2).sum(-1).mean())
        field = field * (c.individual_mm / rms if rms > 0 else 0.0)
        if scale != 1.0:  # the subject's point x shows the base's point c + (x - c) / scale
            field = field + (_points(a.reference) - a.centre) * (1.0 / scale - 1.0)
        while min_jacobian(field, a.reference) < 0.2:  # guarantee a diffeomorphism: never fold, shrink instead
            field = field * 0.7
        return field

    def subject(self, index: int, seed: int = 0, label: str | None = None, anatomy: str | None = None):
        """(Subject record, image, counterfactual, change map) as (z, y, x) arrays on the template grid."""
        return self.subject_with_volume_change(index, seed, label, anatomy)[:4]

    def subject_with_volume_change(
        self, index: int, seed: int = 0, label: str | None = None, anatomy: str | None = None
    ):
        """:meth:`subject`, the true volume change (log(det J) of the scan's warp minus the counterfactual's, in subject
        space: > 0 where the counterfactual has more volume there, the ventricles toward AD) and the scan's own region
        labels (its base's, carried by its warps; None for cohort v1), where evaluation/volumes.py measures."""
        c = self.config
        rng = np.random.default_rng([seed, index])
        # cohort v2's draws come from their own stream, all drawn whatever the settings, so that v1's subjects stay
        # bit for bit what they were and switching one v2 knob never shifts the others
        extra = np.random.default_rng([seed, index, 2])
        chosen = c.anatomies[int(extra.integers(len(c.anatomies)))]
        age = float(extra.uniform(*c.age_range)) if c.age_range else None
        head_scale = float(extra.uniform(*c.head_scale_range))
        gamma = float(extra.uniform(*c.gamma_range))
        blur = float(extra.uniform(*c.blur_range_mm))
        thick_axis = int(extra.integers(3)) if extra.random() < c.thick_slice_fraction else None
        strip = extra.random() < c.strip_error_fraction
        strip_kind, shell_level = ("erode" if extra.random() < 0.5 else "shell"), float(extra.uniform(0.15, 0.5))
        a = self.base(anatomy or chosen)
        if label is None:
            label = "AD" if rng.random() < c.ad_fraction else "CN"
        severity = float(rng.uniform(*c.severity_range)) if label == "AD" else 0.0
        natural = float(rng.uniform(-c.natural_ventricle, c.natural_ventricle)) if label == "CN" else 0.0
        individual = self._individual(rng, a, head_scale)
        scale = rng.uniform(*c.scale_range)
        bias_raw = rng.standard_normal(a.t1.shape).astype(np.float32)
        smooth_bias = _smooth(bias_raw, a.reference, 30.0)
        bias = np.exp(c.bias_strength * smooth_bias / max(1e-6, smooth_bias.std()) / 3)
        noise = rng.standard_normal(a.t1.shape).astype(np.float32) * rng.uniform(*c.noise_range)
        other_label = "CN" if label == "AD" else "AD"
        other_severity = 0.0 if label == "AD" else c.counterfactual_severity
        ageing = max(0.0, (age - AGEING_FROM) / (AGEING_TO - AGEING_FROM)) if age is not None else 0.0
        # cohort v3's draws: a stream of their own, drawn whatever the settings (v1 and v2 stay bit for bit)
        v3 = np.random.default_rng([seed, index, 3])
        drawn = self.profile(v3) if c.subtypes is not None else None
        natural_ad = float(v3.uniform(-c.natural_ventricle, c.natural_ventricle))
        if label == "AD" and c.natural_ventricle_ad:
            natural = natural_ad
        # The AD side's disease: an AD scan's own profile; a CN scan's AD counterfactual gets the typical one -- nothing
        # in a healthy scan tells which subtype that person would develop, so its truth is the most common form
        profile = None if drawn is None else (drawn if label == "AD" else typical_profile())
        if profile is not None:
            profile = self._unfolded(a, max(severity, other_severity), natural, ageing, profile)

        image, vent, hippo, total = self._disease(a, severity, natural, ageing, individual, profile)
        cf, cf_vent, cf_hippo, cf_total = self._disease(a, other_severity, natural, ageing, individual, profile)
        body = _warp(a.mask.astype(np.float32), total, a.reference) > 0.5
        shell = np.zeros_like(body)
        if strip:  # the same stripping error in the scan and its counterfactual: it is the acquisition's
            grown = sitk.GetArrayFromImage(sitk.BinaryDilate(_image_like(body, a.reference) > 0.5, [1, 1, 1])) > 0
            if strip_kind == "erode":
                body = sitk.GetArrayFromImage(sitk.BinaryErode(_image_like(body, a.reference) > 0.5, [1, 1, 1])) > 0
            else:
                shell = grown & ~body

        def acquire(tissue):
            if gamma != 1.0:
                tissue = np.clip(tissue, 0.0, None) ** gamma
            if blur > 0 or thick_axis is not None:
                sigma = np.full(3, blur)
                if thick_axis is not None:
                    sigma[thick_axis] = np.hypot(sigma[thick_axis], 1.3)
                tissue = sitk.GetArrayFromImage(
                    sitk.SmoothingRecursiveGaussian(_image_like(tissue, a.reference), sigma.tolist())
                )
            tissue = np.where(shell, shell_level, tissue)
            covered = a.mask | (tissue > 0) | shell
            return np.where(covered, tissue * scale * bias + noise, 0.0).astype(np.float32) * (body | shell)

        image, cf = acquire(image), acquire(cf)
        record = Subject(
            subject=f"sim-{seed:04d}-{index:05d}",
            label=label,
            severity=round(severity, 4),
            counterfactual_label=other_label,
            counterfactual_severity=other_severity,
            ventricle_ml=round(float(vent.sum()) * self.voxel_ml, 3),
            counterfactual_ventricle_ml=round(float(cf_vent.sum()) * self.voxel_ml, 3),
            anatomy=a.name,
            age=round(age, 1) if age is not None else None,
            hippocampus_ml=round(float(hippo.sum()) * self.voxel_ml, 3),
            counterfactual_hippocampus_ml=round(float(cf_hippo.sum()) * self.voxel_ml, 3),
            subtype=profile.subtype if profile is not None else "",
            asymmetry=profile.asymmetry if profile is not None else None,
        )
        log_jacobian = _log_jacobian(total, a.reference) - _log_jacobian(cf_total, a.reference)
        labels = None
        if a.labels is not None:  # the scan's own regions: its base's labels through its warps, inside its brain
            labels = (_warp(a.labels.astype(np.float32), total, a.reference, nearest=True) * body).astype(np.uint8)
        return record, image, cf, cf - image, (log_jacobian * a.taper).astype(np.float32), labels

    def _unfolded(self, a: _Anatomy, severity: float, natural: float, ageing: float, profile: Profile) -> Profile:
        """``profile`` with its amplitudes shrunk until the disease's displacement folds nowhere (min Jacobian 0.2):
        a diffeomorphism, as every other warp of the simulator."""
        while min_jacobian(self.disease_field(a, severity, natural, ageing, profile), a.reference) < 0.2:
            smaller = {k: v * 0.8 for k, v in profile.amplitudes.items()}
            profile = Profile(profile.subtype, profile.asymmetry, smaller, profile.ventricles * 0.8)
        return profile


def _points(reference: sitk.Image) -> np.ndarray:
    """(z, y, x, 3) physical (LPS) coordinates of every voxel centre."""
    k, j, i = np.indices(reference.GetSize()[::-1])
    idx = np.stack([i, j, k], axis=-1).astype(float)
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    return np.array(reference.GetOrigin()) + (idx * np.array(reference.GetSpacing())) @ direction.T


def write_cohort(
    out: str | Path,
    n: int,
    grid: Sequence[int] | None = (80, 96, 80),
    seed: int = 0,
    config: SimulationConfig | None = None,
    on_subject: Callable[[int, Subject], None] | None = None,
) -> Path:
    """Write ``n`` subjects (image, true counterfactual, true change map, true log-Jacobian and, but for cohort v1,
    the scan's region labels, as NIfTI) and ``manifest.csv`` to ``out``.

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
        record, *volumes = sim.subject_with_volume_change(i, seed)
        for kind, array in zip(("image", "counterfactual", "change", "log_jacobian", "labels"), volumes):
            if array is None:
                continue
            img = _image_like(array, ref)
            if kind == "labels":
                if target is not None:
                    img = resample(img, target, interpolator=sitk.sitkNearestNeighbor)
                img = sitk.Cast(img, sitk.sitkUInt8)
            elif target is not None:
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


def volume_summary(manifest: str | Path) -> list[str]:
    """Lines reporting a written cohort's ventricle volume per class and the effect size (Cohen's d, pooled sd), and
    how much larger the hippocampi of each AD scan are in its CN counterfactual (real AD: about 22-24 % smaller
    hippocampi than controls of the same age, Shi et al., Hippocampus 2009)."""
    import statistics

    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    ad = [r for r in rows if r["label"] == "AD" and r.get("hippocampus_ml")]
    lost = [1 - float(r["hippocampus_ml"]) / float(r["counterfactual_hippocampus_ml"]) for r in ad]
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
    if lost:
        lines.append(
            f"AD hippocampi {100 * statistics.mean(lost):.0f} % smaller than in their CN counterfactual "
            f"(range {100 * min(lost):.0f}-{100 * max(lost):.0f} %, n={len(lost)})"
        )
    return lines
