"""The simulated subjects an evaluation measures: their manifest, their scans on a model grid, and the conversions
between the [0, 1] volumes the metrics compare and the model-range tensors the sampler takes."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..imaging.intensity import to_model_range
from ..imaging.native_space import prepare


@dataclass
class SimulatedSubject:
    subject: str
    label: str
    target: str  # the class of the true counterfactual
    image: Path
    true_counterfactual: Path
    anatomy: str = "icbm2009a"  # the base anatomy (cohort v1 manifests name none: the ICBM template)


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
            r.get("anatomy") or "icbm2009a",
        )
        for r in rows
    ]


def balanced(subjects: Sequence[SimulatedSubject], n: int | None) -> list[SimulatedSubject]:
    """The first ``n`` subjects of the list, as evenly split between the classes as the list allows."""
    if n is None:
        return list(subjects)
    by_class = {c: [s for s in subjects if s.label == c] for c in sorted({s.label for s in subjects})}
    share = {c: n // len(by_class) + (i < n % len(by_class)) for i, c in enumerate(by_class)}
    return [s for c, ss in by_class.items() for s in ss[: share[c]]]


def prepare_subject(subject: SimulatedSubject, grid, intensity):
    """A simulated subject's scan on a model grid (already in MNI space: no registration)."""
    return prepare(sitk.ReadImage(str(subject.image)), grid, preprocessed=True, intensity=intensity, screen="off")


def model_tensor(unit: np.ndarray, intensity) -> torch.Tensor:
    """A [0, 1] volume as the float32 tensor in model range the sampler takes."""
    return torch.from_numpy(np.asarray(to_model_range(unit, intensity), dtype=np.float32))


def real_example(subject: SimulatedSubject, grid, intensity) -> dict:
    """A subject's own scan as a classifier example (the FIDs' reference, the augmentation's real data)."""
    unit = prepare_subject(subject, grid, intensity).model_input
    return {
        "method": "real",
        "subject": subject.subject,
        "label": subject.label,
        "volume": to_model_range(unit, intensity),
    }
