"""Measuring counterfactuals on simulated subjects, whose true counterfactual and change map are known.

One function, :func:`measure_subject`, measures one subject for ``controlcg evaluate`` and the benchmarks alike: it
goes through the product's own path (preprocessing, the one sampling loop, the classifier verdict), so the figures
describe what a user gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..defaults import EVALUATION_SWEEP, W, w_key
from ..imaging.native_space import Prepared
from ..model.classifier import VolumeClassifier
from ..pipeline import DEFORMATION, INTENSITY, show
from ..progress import StepCallback
from ..sampling.settings import SamplingConfig, product_sampling
from .anchors import ATLAS, OTHER_SUBJECT, Anchors, with_change
from .metrics import CHANGED, mse, saliency_auroc, ssim
from .subjects import SimulatedSubject, model_tensor, prepare_subject, real_example

# The product: paired (the change from the source class's output to the target's, from the same noise), shown as the
# deformation of the scan that change is (imaging/deformation.py), with mask-guided blending of the input during
# sampling (sampling/blending.py). Each ablation changes one thing of it, except the paper's output, which has neither
# pairing nor blending and is shown as the model draws it.
OURS = "ours"
INTENSITY_CHANGE = "ours-intensity"  # the same run, shown as the scan plus the outputs' intensity difference
UNPAIRED = "ours-unpaired"  # the paper's output: the model's counterfactual itself, no pairing, no blending
WITHOUT_BLEND = "ours-no-blend"  # paired, without blending
WITH_INJECTION = "ours-injection"  # with the paper's attention injection (defaults.INJECTION: off in the product)
INVERSION_START = "ours-inversion-start"  # started from the DDIM-inverted input instead of the noised input
ABLATIONS = (INTENSITY_CHANGE, UNPAIRED, WITHOUT_BLEND, WITH_INJECTION, INVERSION_START)
SWEPT = (OURS, INTENSITY_CHANGE)  # measured over the whole w sweep (the paper's Table 1); the rest at the default w
# The anchors every metric is read against: the input unchanged (the floor: what "doing nothing" scores), the
# subject-agnostic atlas and another subject's change (anchors.py: what an explanation blind to this patient scores)
# and the simulator's true counterfactual (the ceiling). None runs a model; all are measured like any method.
IDENTITY = "identity"
ORACLE = "oracle"
ANCHORS = (IDENTITY, ATLAS, OTHER_SUBJECT, ORACLE)


@dataclass(frozen=True)
class EvaluationSettings:
    """What :func:`measure_subject` runs; the defaults are ``controlcg evaluate``'s full setting. Ours is the product
    with exact arithmetic (:meth:`sampling`); a sampling field set here (not None) replaces the product's."""

    scales: tuple[float, ...] = EVALUATION_SWEEP  # our w sweep (paper Table 1)
    default_w: float = W.default  # the product's default; every method is compared there (paper Table 2)
    steps: int | None = None  # the grid of every method (the baselines' start strengths are fractions of it)
    solver: str | None = None  # the step of ours and its ablations (DDIM inversion stays DDIM, ILVR follows)
    spacing: str | None = None
    start_strength: float | None = None  # where ours and its ablations start
    seeds: tuple[int, ...] = (0, 1, 2)
    axioms_seed: int = 0  # composition and reversibility are measured on this seed only (they cost two more runs)
    baselines: tuple | None = None  # baselines.Method entries; None: the paper's five, (): ours alone
    precision: str | None = None  # None: fp32
    kv_stride: int | None = None  # None: 1, exact; > 1: every method attends to fewer keys (token_downsampling.py)
    axioms: bool = True  # composition and reversibility on the axioms seed (benchmarks may skip their two runs)
    anchors: bool = True  # identity and oracle rows at the default w
    ablations: tuple[str, ...] = ABLATIONS  # variants of ours at the default w (names above); (): none

    def methods(self):
        from ..sampling.baselines import PAPER_BASELINES, Method

        baselines = PAPER_BASELINES if self.baselines is None else self.baselines
        # start strength and blending unset: as the sampling (the product's) says
        warp = DEFORMATION
        variants = {
            INTENSITY_CHANGE: Method(INTENSITY_CHANGE, "ours", paired=True, change=INTENSITY),
            UNPAIRED: Method(UNPAIRED, "ours", blend=False),
            WITHOUT_BLEND: Method(WITHOUT_BLEND, "ours", paired=True, blend=False, change=warp),
            WITH_INJECTION: Method(WITH_INJECTION, "ours", paired=True, inject=True, change=warp),
            INVERSION_START: Method(INVERSION_START, "ddim-inversion", paired=True, change=warp),
        }
        unknown = [a for a in self.ablations if a not in variants]
        if unknown:
            raise ValueError(f"unknown ablation(s) {unknown}; choose from {list(variants)}")
        ours = Method(OURS, "ours", paired=True, change=DEFORMATION)
        return (ours, *(variants[a] for a in self.ablations), *baselines)

    def sampling(self, model_name: str) -> SamplingConfig:
        """Ours: the product's sampling for this model, with exact arithmetic, and the changes set here."""
        changes = {"steps": self.steps, "solver": self.solver, "spacing": self.spacing}
        changes |= {"start_strength": self.start_strength, "precision": self.precision, "kv_stride": self.kv_stride}
        return product_sampling(model_name, exact=True, **changes)


def measure_subject(
    model,
    classifier,
    judge,
    subject: SimulatedSubject,
    settings: EvaluationSettings,
    seed: int,
    *,
    images: dict | None = None,
    on_step: StepCallback | None = None,
    anchors: Anchors | None = None,
) -> list[dict]:
    """Every method's counterfactual of one subject toward its true counterfactual class, one row per (method, w):
    the explained classifier's verdict on the input and the counterfactual, similarity to the input and to the
    truth, saliency AUROC and Dice against the true change, the flip judged by the explained classifier and by an
    independent ``judge`` (None: not judged), the explained classifier's features (for the KIDs), and, on the axioms
    seed, composition (a counterfactual toward the subject's own class) and reversibility (the counterfactual's
    counterfactual back toward the source). Every row also scores the signed change against the true change
    (metrics.change_scores), the regional volume change of the counterfactual and of the truth read with one ruler
    (volumes.py; ``dv_<region>``, ``dv_true_<region>`` and their distance ``dv_error_<region>``, in % and percentage
    points, where the cohort carries labels) and, given ``anchors`` with another subject of this direction, the swap
    test. ``anchors`` adds the atlas and other-subject rows beside identity and oracle. ``images``, when given,
    receives the model-grid arrays ("input", "truth", and (method, w) per counterfactual) for figures."""
    from .metrics import change_scores, closer_to_own, saliency_dice

    config = model.config
    prepared = prepare_subject(subject, config.grid, config.intensity)
    unit, mask = prepared.model_input, prepared.mask
    truth = prepared.same_scaling(sitk.ReadImage(str(subject.true_counterfactual)))
    explained = VolumeClassifier(classifier)
    judged = VolumeClassifier(judge) if judge is not None else None
    sampling = settings.sampling(config.name)
    p_input = explained.verdict(unit)
    if images is not None:
        images.update(input=unit, truth=truth)
    rows = []
    # A mild case's true change may stay below the "changed" threshold on a coarse grid: its saliency cannot be
    # scored (None, left out of the means), while every other metric still is.
    changed = np.abs(truth - unit)[mask.astype(bool)] > CHANGED
    can_score = bool(changed.any()) and not bool(changed.all())

    def scorable(metric, saliency):
        return metric(saliency, truth - unit, mask) if can_score else None

    ruler = subject_ruler(subject, prepared, unit, mask)
    before = ruler.volumes(unit) if ruler is not None else None
    true_volume = ruler.change_percent(truth, before) if ruler is not None else {}

    def volume_change(cf: np.ndarray) -> dict:
        if ruler is None:
            return {}
        shown = ruler.change_percent(cf, before)
        out = {}
        for region, true in true_volume.items():
            key = region.replace(" ", "_")
            out[f"dv_{key}"], out[f"dv_true_{key}"] = shown[region], true
            both = shown[region] is not None and true is not None
            out[f"dv_error_{key}"] = abs(shown[region] - true) if both else None
        return out

    direction = f"{subject.label}->{subject.target}"
    other = anchors.other(subject.subject) if anchors is not None else None
    atlas = anchors.atlas(subject.subject, direction) if anchors is not None else None

    def row(method: str, w: float, cf: np.ndarray, seconds: float) -> dict:
        p = explained.verdict(cf)
        q = judged.verdict(cf) if judged is not None else None
        return {
            "subject": subject.subject,
            "anatomy": subject.anatomy,
            "source": subject.label,
            "target": subject.target,
            "method": method,
            "w": float(w),
            "seed": seed,
            "input_correct": max(p_input, key=p_input.get) == subject.label,
            "p_target_input": p_input[subject.target],
            "flipped": max(p, key=p.get) == subject.target,
            "flipped_judge": max(q, key=q.get) == subject.target if q is not None else None,
            "p_target": p[subject.target],
            "ssim": ssim(unit, cf),
            "mse": mse(unit, cf),
            "ssim_true_cf": ssim(truth, cf),
            "mse_true_cf": mse(truth, cf),
            "saliency_auroc": scorable(saliency_auroc, cf - unit),
            "saliency_dice": scorable(saliency_dice, cf - unit),
            **change_scores(cf, truth, unit, mask),
            **volume_change(cf),
            "swap_own_closer": closer_to_own(cf - unit, truth - unit, other, mask) if other is not None else None,
            "composition_mse": None,
            "reversibility_mse": None,
            "seconds": seconds,
            "features": explained.features(cf).tolist(),
        }

    shown = each_counterfactual(settings, model, prepared, subject.label, subject.target, sampling, seed, on_step)
    for method, w, cf, seconds in shown:
        entry = row(method.name, w, cf, seconds)
        if images is not None:
            images[(method.name, float(w))] = cf
        if settings.axioms and seed == settings.axioms_seed and float(w) == float(settings.default_w):
            entry.update(axioms(method, model, prepared, cf, subject.label, subject.target, w, sampling, seed))
        rows.append(entry)
    if settings.anchors:
        shown = {IDENTITY: unit}
        for name, change in ((ATLAS, atlas), (OTHER_SUBJECT, other)):
            if change is not None:
                shown[name] = with_change(unit, change, mask)
        shown[ORACLE] = np.clip(truth, 0.0, 1.0) * mask
        for method, cf in shown.items():
            entry = row(method, settings.default_w, cf, 0.0)
            if settings.axioms and seed == settings.axioms_seed and method in (IDENTITY, ORACLE):
                # toward its own class the input stays; the truth's own counterfactual is the input again
                entry["composition_mse"] = entry["reversibility_mse"] = 0.0
            if images is not None:
                images[(method, float(settings.default_w))] = cf
            rows.append(entry)
    return rows


def each_counterfactual(
    settings, model, prepared: Prepared, source: str, target: str, sampling, seed: int, on_step=None
):
    """Every method's counterfactual of one prepared input, shown as that method shows it: (method, w, shown,
    seconds of its run) over the sweep for :data:`SWEPT`, at the default w for the rest; methods that sample alike
    share a run."""
    from ..sampling.baselines import run_method

    y0 = model_tensor(prepared.model_input, model.config.intensity)
    runs = {}
    for method in settings.methods():
        scales = settings.scales if method.name in SWEPT else (settings.default_w,)
        key = (method.sampled_as(), tuple(scales))
        if key not in runs:
            runs[key] = run_method(method, model, y0, source, target, scales, sampling, seed=seed, on_step=on_step)
        result = runs[key]
        for w in result.images:
            yield method, float(w), show(result, w, prepared, model.config.intensity, method.change)[0], result.seconds


def axioms(method, model, prepared: Prepared, cf: np.ndarray, source: str, target: str, w: float, sampling, seed: int):
    """The two checks that need no truth, as MSE to the input (ideally 0): composition (the method toward the scan's
    own class) and reversibility (the counterfactual ``cf``'s counterfactual back toward ``source``). Two more runs."""
    from ..sampling.baselines import run_method

    intensity, unit = model.config.intensity, prepared.model_input
    y0 = model_tensor(unit, intensity)
    own = run_method(method, model, y0, source, source, (w,), sampling, seed=seed)
    back = run_method(method, model, model_tensor(cf, intensity), target, source, (w,), sampling, seed=seed)
    shown_cf = Prepared.on_model_grid(cf, prepared.mask, prepared.grid)
    return {
        "composition_mse": mse(unit, show(own, w, prepared, intensity, method.change)[0]),
        "reversibility_mse": mse(unit, show(back, w, shown_cf, intensity, method.change)[0]),
    }


def subject_ruler(subject: SimulatedSubject, prepared, unit: np.ndarray, mask: np.ndarray):
    """The volume ruler of the subject's scan (volumes.py), or None where it cannot read this scan: a cohort without
    region labels (v1), or a grid too coarse to hold a region (its volume columns are then empty, never guessed)."""
    from ..imaging.geometry import resample
    from .volumes import VolumeRuler

    if subject.labels is None:
        return None
    labels = resample(sitk.ReadImage(str(subject.labels)), prepared.grid, interpolator=sitk.sitkNearestNeighbor)
    try:
        return VolumeRuler(unit, sitk.GetArrayFromImage(labels), mask)
    except ValueError:
        return None


def real_features(classifier, subjects: Sequence[SimulatedSubject]) -> list[dict]:
    """The explained classifier's features of the real (input) scans, the KIDs' reference sets."""
    from ..model.classifier import features

    grid, intensity = classifier.config.grid, classifier.config.intensity
    out = []
    for s in subjects:
        example = real_example(s, grid, intensity)
        out.append(
            {"subject": s.subject, "label": s.label, "features": features(classifier, example["volume"]).tolist()}
        )
    return out


def summarise(rows: Sequence[dict]) -> dict:
    """Mean and sd of every numeric column per (w, direction) and per w over both directions."""
    keys = ["flipped", "p_target", "ssim", "mse", "ssim_true_cf", "mse_true_cf", "saliency_auroc", "seconds"]
    out: dict = {}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["w"], "all"), []).append(r)
        groups.setdefault((r["w"], f"{r['source']}->{r['target']}"), []).append(r)
    for (w, direction), rs in sorted(groups.items()):
        entry = {"n": len(rs)}
        for k in keys:
            v = np.array([float(r[k]) for r in rs])
            entry[k] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
        out.setdefault(f"w={w_key(w)}", {})[direction] = entry
    return out
