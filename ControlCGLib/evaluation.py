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

from .classifier import classify
from .config import SamplingConfig
from .intensity import from_model_range, to_model_range
from .metrics import mse, saliency_auroc, ssim
from .native import prepare
from .progress import StepCallback
from .sampler import counterfactual


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
    prepared = prepare(sitk.ReadImage(str(subject.image)), config.grid, preprocessed=True, intensity=config.intensity)
    unit = prepared.model_input
    truth = prepared.same_scaling(sitk.ReadImage(str(subject.true_counterfactual)))
    y0 = torch.from_numpy(np.asarray(to_model_range(unit, config.intensity), dtype=np.float32))
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
