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
    labels: Path | None = None  # the scan's own region labels (cohorts v2 and v3 write them; evaluation/volumes.py)


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
            manifest.parent / r["labels"] if r.get("labels") else None,
        )
        for r in rows
    ]


def balanced(subjects: Sequence[SimulatedSubject], n: int | None) -> list[SimulatedSubject]:
    """``n`` subjects of the list, the classes taking turns and each class taking its anatomies in turn, so that the
    two directions are as balanced overall and within each anatomy as the list allows (else direction and anatomy
    are confounded); a class or anatomy that runs out leaves its turn to the others. Kept in the list's order."""
    if n is None:
        return list(subjects)
    by_class: dict[str, dict[str, list[SimulatedSubject]]] = {}
    for s in subjects:
        by_class.setdefault(s.label, {}).setdefault(s.anatomy, []).append(s)
    per_class = [_round_robin([list(cells[a]) for a in sorted(cells)]) for _, cells in sorted(by_class.items())]
    chosen = _round_robin(per_class)[:n]
    order = {id(s): i for i, s in enumerate(subjects)}
    return sorted(chosen, key=lambda s: order[id(s)])


def _round_robin(queues: list[list]) -> list:
    out = []
    while any(queues):
        out += [q.pop(0) for q in queues if q]
    return out


def prepare_subject(subject: SimulatedSubject, grid, intensity):
    """A simulated subject's scan on a model grid (already in MNI space: no registration)."""
    return prepare(sitk.ReadImage(str(subject.image)), grid, preprocessed=True, intensity=intensity, screen="off")


def model_tensor(unit: np.ndarray, intensity) -> torch.Tensor:
    """A [0, 1] volume as the float32 tensor in model range the sampler takes."""
    return torch.from_numpy(np.asarray(to_model_range(unit, intensity), dtype=np.float32))


def real_example(subject: SimulatedSubject, grid, intensity) -> dict:
    """A subject's own scan as a classifier example (the KIDs' reference, the augmentation's real data)."""
    unit = prepare_subject(subject, grid, intensity).model_input
    return {
        "method": "real",
        "subject": subject.subject,
        "label": subject.label,
        "volume": to_model_range(unit, intensity),
    }
