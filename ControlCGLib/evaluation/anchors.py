"""The subject-agnostic anchors every explanation is read against, beside ``identity`` (the input unchanged: the floor)
and ``oracle`` (the true counterfactual: the ceiling).

- ``atlas``: the mean true change of other subjects of the same direction, added to the input -- the best that any
  explanation blind to this patient can do. Its subjects come from the anatomies the models were trained on (or a
  cohort given for it), never the subject itself.
- ``other-subject``: another evaluated subject's true change (same direction) added to this input: the swap test's
  reference. A method whose change is no closer to the patient's own truth than to another patient's explains the
  class, not the patient.

All changes are on the model grid in [0, 1] units; simulated subjects share MNI space, so their maps align voxel by
voxel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .subjects import SimulatedSubject, prepare_subject

ATLAS = "atlas"
OTHER_SUBJECT = "other-subject"


@dataclass
class TrueChange:
    """One simulated subject on the model grid: its input, brain mask and true change (truth - input)."""

    subject: str
    direction: str  # "CN->AD" or "AD->CN"
    unit: np.ndarray
    mask: np.ndarray
    change: np.ndarray

    def shown(self, change: np.ndarray) -> np.ndarray:
        return with_change(self.unit, change, self.mask)


def with_change(unit: np.ndarray, change: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``change`` added to the input ``unit`` as a counterfactual a user could see: in [0, 1], inside the brain."""
    return np.clip(unit + change, 0.0, 1.0) * mask


def true_change(subject: SimulatedSubject, grid, intensity) -> TrueChange:
    prepared = prepare_subject(subject, grid, intensity)
    truth = prepared.same_scaling(sitk.ReadImage(str(subject.true_counterfactual)))
    unit, mask = prepared.model_input, prepared.mask
    return TrueChange(subject.subject, f"{subject.label}->{subject.target}", unit, mask, (truth - unit) * mask)


class Anchors:
    """The atlas change per direction (from ``pool``) and each evaluated subject's other subject (from ``evaluated``,
    in order: the next subject of the same direction, cyclically)."""

    def __init__(self, pool: Sequence[TrueChange], evaluated: Sequence[TrueChange]):
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}
        # (subject, direction) -> the sum and number of its own changes (a subject may have several scans): left out
        # of its atlas
        self._pooled: dict[tuple[str, str], tuple[np.ndarray, int]] = {}
        for c in pool:
            self._sums[c.direction] = self._sums.get(c.direction, 0.0) + c.change
            self._counts[c.direction] = self._counts.get(c.direction, 0) + 1
            own, n = self._pooled.get((c.subject, c.direction), (0.0, 0))
            self._pooled[(c.subject, c.direction)] = (own + c.change, n + 1)
        self._others: dict[str, np.ndarray] = {}
        for direction in {c.direction for c in evaluated}:
            same = [c for c in evaluated if c.direction == direction]
            for i, c in enumerate(same):
                other = next((o for o in same[i + 1 :] + same[:i] if o.subject != c.subject), None)
                if other is not None:
                    self._others[c.subject] = other.change

    def pool_size(self, direction: str) -> int:
        return self._counts.get(direction, 0)

    def atlas(self, subject: str, direction: str) -> np.ndarray | None:
        """The mean change of the pool's subjects of ``direction`` other than ``subject`` (None: none left)."""
        total, n = self._sums.get(direction), self._counts.get(direction, 0)
        if (subject, direction) in self._pooled:
            own, count = self._pooled[(subject, direction)]
            total, n = total - own, n - count
        return None if n < 1 else total / n

    def other(self, subject: str) -> np.ndarray | None:
        return self._others.get(subject)


def build_anchors(evaluated: Sequence[SimulatedSubject], pool: Sequence[SimulatedSubject], grid, intensity) -> Anchors:
    """Anchors for ``evaluated`` with the atlas from ``pool`` (each subject prepared once)."""
    cache: dict[str, TrueChange] = {}

    def get(s: SimulatedSubject) -> TrueChange:
        if s.subject not in cache:
            cache[s.subject] = true_change(s, grid, intensity)
        return cache[s.subject]

    return Anchors([get(s) for s in pool], [get(s) for s in evaluated])
