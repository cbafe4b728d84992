"""Measuring counterfactuals on simulated subjects, whose true counterfactual and change map are known.

One subject at a time goes through the product's own path (preprocessing, the one sampling loop, the classifier
verdict), so the figures describe what a user gets. ``controlcg evaluate`` and benchmarks build on this.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..defaults import EVALUATION_SWEEP, START_STRENGTH, W
from ..imaging.intensity import from_model_range, to_model_range
from ..imaging.native_space import prepare
from ..model.classifier import classify
from ..progress import StepCallback
from ..sampling.sampler import counterfactual
from ..sampling.settings import SamplingConfig
from .metrics import mse, saliency_auroc, ssim


@dataclass
class SimulatedSubject:
    subject: str
    label: str
    target: str  # the class of the true counterfactual
    image: Path
    true_counterfactual: Path


def read_simulated(manifest: str | Path) -> list[SimulatedSubject]:
    """The subjects of a simulated cohort's manifest.csv (written by ``controlcg simulate``)."""
    manifest = Path(manifest)
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"subject", "label", "counterfactual_label", "image", "counterfactual"} - set(rows[0] if rows else ())
    if missing:
        raise ValueError(f"{manifest} is not a simulated cohort manifest (missing columns {sorted(missing)})")
    return [
        SimulatedSubject(
            r["subject"],
            r["label"],
            r["counterfactual_label"],
            manifest.parent / r["image"],
            manifest.parent / r["counterfactual"],
        )
        for r in rows
    ]


def _prepared(subject: SimulatedSubject, grid, intensity):
    """A simulated subject's scan on a model grid (already in MNI space: no registration)."""
    return prepare(sitk.ReadImage(str(subject.image)), grid, preprocessed=True, intensity=intensity, screen="off")


def _model_tensor(unit: np.ndarray, intensity) -> torch.Tensor:
    """A [0, 1] volume as the float32 tensor in model range the sampler takes."""
    return torch.from_numpy(np.asarray(to_model_range(unit, intensity), dtype=np.float32))


def training_pairs(examples, class_names) -> list:
    """(volume (1, D, H, W), class index) pairs, what the classifier trainer and its validation read."""
    names = list(class_names)
    return [
        (torch.from_numpy(np.asarray(e["volume"], dtype=np.float32))[None], names.index(e["label"])) for e in examples
    ]


def evaluate_subject(
    model,
    classifier,
    subject: SimulatedSubject,
    scales: Sequence[float],
    sampling: SamplingConfig | None = None,
    *,
    seed: int = 0,
    on_step: StepCallback | None = None,
    images: dict | None = None,
) -> list[dict]:
    """One row per w: verdicts and the similarity, truth and saliency metrics of the counterfactual toward the
    subject's true counterfactual class. ``images``, when given, receives the model-grid arrays ("input", "truth",
    and one per w) for figures."""
    config = model.config
    prepared = _prepared(subject, config.grid, config.intensity)
    unit = prepared.model_input
    truth = prepared.same_scaling(sitk.ReadImage(str(subject.true_counterfactual)))
    y0 = _model_tensor(unit, config.intensity)
    result = counterfactual(model, y0, subject.target, scales, sampling, seed=seed, on_step=on_step)
    names, scale = classifier.config.class_names, classifier.config.intensity
    p_input = classify(classifier, to_model_range(unit, scale), names)
    rows = []
    if images is not None:
        images.update(input=unit, truth=truth)
    for w, x in result.images.items():
        cf = np.clip(from_model_range(x.numpy(), config.intensity), 0.0, 1.0) * prepared.mask
        if images is not None:
            images[float(w)] = cf
        p = classify(classifier, to_model_range(cf, scale), names)
        rows.append(
            {
                "subject": subject.subject,
                "source": subject.label,
                "target": subject.target,
                "w": float(w),
                "input_correct": max(p_input, key=p_input.get) == subject.label,
                "p_target_input": p_input[subject.target],
                "p_target": p[subject.target],
                "flipped": max(p, key=p.get) == subject.target,
                "ssim": ssim(unit, cf),
                "mse": mse(unit, cf),
                "ssim_true_cf": ssim(truth, cf),
                "mse_true_cf": mse(truth, cf),
                "saliency_auroc": saliency_auroc(cf - unit, truth - unit, prepared.mask),
                "seconds": result.seconds,
            }
        )
    return rows


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
        out.setdefault(f"w={w:g}", {})[direction] = entry
    return out


# --- the method comparison (controlcg evaluate) -----------------------------------------------------------------------

OURS = "ours"


@dataclass(frozen=True)
class EvaluationSettings:
    """What ``controlcg evaluate`` measures; the defaults are the full setting's."""

    scales: tuple[float, ...] = EVALUATION_SWEEP  # our w sweep (paper Table 1)
    default_w: float = W.default  # the product's default; every method is compared there (paper Table 2)
    steps: int = 20  # DDIM grid of every method (the baselines' depths are fractions of it)
    start_strength: float = START_STRENGTH.default  # ours, as the product runs it
    seeds: tuple[int, ...] = (0, 1, 2)
    axioms_seed: int = 0  # composition and reversibility are measured on this seed only (they cost two more runs)
    baselines: tuple = ()  # baselines.Method entries; empty: the paper's five

    def methods(self):
        from ..sampling.baselines import PAPER_BASELINES, Method

        return (Method(OURS, "ours", depth=self.start_strength), *(self.baselines or PAPER_BASELINES))


def _unit(x: torch.Tensor, config, mask: np.ndarray) -> np.ndarray:
    return np.clip(from_model_range(x.numpy(), config.intensity), 0.0, 1.0) * mask


def measure_subject(
    model,
    classifier,
    judge,
    subject: SimulatedSubject,
    settings: EvaluationSettings,
    seed: int,
    *,
    images: dict | None = None,
) -> list[dict]:
    """Every method's counterfactual of one subject toward its true counterfactual class, one row per (method, w):
    similarity to the input and to the truth, saliency AUROC and Dice against the true change, the flip judged by the
    explained classifier and by an independent one, the explained classifier's features (for the FIDs), and, on the
    axioms seed, composition (a counterfactual toward the subject's own class) and reversibility (the
    counterfactual's counterfactual back toward the source)."""
    from ..model.classifier import features
    from ..sampling.baselines import run_method
    from .metrics import saliency_dice

    config = model.config
    prepared = _prepared(subject, config.grid, config.intensity)
    unit, mask = prepared.model_input, prepared.mask
    truth = prepared.same_scaling(sitk.ReadImage(str(subject.true_counterfactual)))
    y0 = _model_tensor(unit, config.intensity)
    names, scale = classifier.config.class_names, classifier.config.intensity
    sampling = SamplingConfig(steps=settings.steps)
    if images is not None:
        images.update(input=unit, truth=truth)
    rows = []
    for method in settings.methods():
        scales = settings.scales if method.name == OURS else (settings.default_w,)
        result = run_method(method, model, y0, subject.label, subject.target, scales, sampling, seed=seed)
        for w, x in result.images.items():
            cf = _unit(x, config, mask)
            p = classify(classifier, to_model_range(cf, scale), names)
            q = classify(judge, to_model_range(cf, judge.config.intensity), judge.config.class_names)
            row = {
                "subject": subject.subject,
                "source": subject.label,
                "target": subject.target,
                "method": method.name,
                "w": float(w),
                "seed": seed,
                "flipped": max(p, key=p.get) == subject.target,
                "flipped_judge": max(q, key=q.get) == subject.target,
                "p_target": p[subject.target],
                "ssim": ssim(unit, cf),
                "mse": mse(unit, cf),
                "ssim_true_cf": ssim(truth, cf),
                "mse_true_cf": mse(truth, cf),
                "saliency_auroc": saliency_auroc(cf - unit, truth - unit, mask),
                "saliency_dice": saliency_dice(cf - unit, truth - unit, mask),
                "composition_mse": None,
                "reversibility_mse": None,
                "seconds": result.seconds,
                "features": features(classifier, to_model_range(cf, scale)).tolist(),
            }
            if images is not None and seed == settings.axioms_seed:
                images[(method.name, float(w))] = cf
            if seed == settings.axioms_seed and float(w) == float(settings.default_w):
                own = run_method(method, model, y0, subject.label, subject.label, (w,), sampling, seed=seed)
                row["composition_mse"] = mse(unit, _unit(own.images[w], config, mask))
                back_input = _model_tensor(cf, config.intensity)
                back = run_method(method, model, back_input, subject.target, subject.label, (w,), sampling, seed=seed)
                row["reversibility_mse"] = mse(unit, _unit(back.images[w], config, mask))
            rows.append(row)
    return rows


def real_features(classifier, subjects: Sequence[SimulatedSubject]) -> list[dict]:
    """The explained classifier's features of the real (input) scans, the FIDs' reference sets."""
    from ..model.classifier import features

    grid, intensity = classifier.config.grid, classifier.config.intensity
    out = []
    for s in subjects:
        example = real_example(s, grid, intensity)
        out.append(
            {"subject": s.subject, "label": s.label, "features": features(classifier, example["volume"]).tolist()}
        )
    return out


# --- data augmentation (paper Table 3) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentationSettings:
    real: int = 8  # real training scans (half per class): few, so that extra data can matter
    steps: int = 300  # classifier training steps, the same for every method
    batch_size: int = 8
    lr: float = 3e-3
    seed: int = 0


def generated_example(model, method, subject: SimulatedSubject, w: float, steps: int, seed: int, intensity) -> dict:
    """One extra training example: the subject's counterfactual toward its other class, labelled with that class."""
    from ..sampling.baselines import run_method

    config = model.config
    prepared = _prepared(subject, config.grid, config.intensity)
    y0 = _model_tensor(prepared.model_input, config.intensity)
    result = run_method(method, model, y0, subject.label, subject.target, (w,), SamplingConfig(steps=steps), seed=seed)
    cf = _unit(result.images[float(w)], config, prepared.mask)
    return {
        "method": method.name,
        "subject": subject.subject,
        "label": subject.target,
        "volume": to_model_range(cf, intensity),
    }


def real_example(subject: SimulatedSubject, grid, intensity) -> dict:
    unit = _prepared(subject, grid, intensity).model_input
    return {
        "method": "real",
        "subject": subject.subject,
        "label": subject.label,
        "volume": to_model_range(unit, intensity),
    }


def train_and_test(
    classifier_config, train: Sequence[dict], val_set, test: Sequence[dict], settings: AugmentationSettings, out: Path
) -> dict:
    """Train a classifier on ``train`` examples (best by ``val_set``) and score it on ``test``: accuracy, balanced
    accuracy and the AUC of p(last class)."""
    from monai.metrics import compute_roc_auc

    from ..model.checkpoints import load_checkpoint
    from ..model.classifier import predict_proba
    from ..training.classifier_trainer import ClassifierTrainConfig, train_classifier

    names = list(classifier_config.class_names)
    data = training_pairs(train, names)
    config = ClassifierTrainConfig(
        steps=settings.steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        eval_every=max(1, settings.steps // 4),
        seed=settings.seed,
    )
    folder = train_classifier(classifier_config, data, val_set, out, config)
    model = load_checkpoint(folder)
    volumes = torch.stack([torch.from_numpy(np.asarray(e["volume"], dtype=np.float32))[None] for e in test])
    labels = np.array([names.index(e["label"]) for e in test])
    proba = predict_proba(model, volumes).numpy()
    predicted = proba.argmax(1)
    recalls = [float((predicted[labels == c] == c).mean()) for c in range(len(names)) if (labels == c).any()]
    auc = None
    if len(set(labels.tolist())) == 2:
        auc = float(compute_roc_auc(torch.from_numpy(proba[:, 1]), torch.from_numpy(labels.astype(np.float32))))
    return {
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        "auc": auc,
        "train_real": sum(e["method"] == "real" for e in train),
        "train_generated": sum(e["method"] != "real" for e in train),
        "steps": settings.steps,
    }
