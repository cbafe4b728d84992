"""Classifier-free guidance, paper Eq. 5.

``pred(x, c, w) = (1 + w) * pred(x, c) - w * pred(x, null)``: the original form of Ho & Salimans
(cond + w * (cond - uncond)). ``w = 0`` is plain conditional sampling; larger ``w`` pushes further from the
unconditional prediction, i.e. more class change. The same combination applies to eps and to v (both are linear in
the model output).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import torch

from ..defaults import W


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor | None, w: float) -> torch.Tensor:
    """Eq. 5. ``uncond`` may be None only when ``w == 0`` (the unconditional pass is then skipped)."""
    if w == 0:
        return cond
    if uncond is None:
        raise ValueError("guidance with w != 0 needs the unconditional prediction")
    return (1.0 + w) * cond - w * uncond


def check_scales(scales) -> tuple[float, ...]:
    """Guidance scales as a tuple of distinct floats in the product's range of w (a single number is accepted)."""
    if isinstance(scales, torch.Tensor):
        scales = scales.reshape(-1).tolist()
    if isinstance(scales, numbers.Real):
        scales = (scales,)
    if isinstance(scales, (str, bytes)) or not isinstance(scales, Iterable):
        raise ValueError(f"guidance scales must be a number or a list of numbers, got {scales!r}")
    scales = list(scales)
    for w in scales:
        if isinstance(w, bool) or not isinstance(w, numbers.Real):
            raise ValueError(f"guidance scale w must be a number, got {w!r}")
    out = tuple(float(w) for w in scales)
    if not out:
        raise ValueError("give at least one guidance scale w")
    for w in out:
        if not w == w:
            raise ValueError("guidance scale w must be a number, got nan")
        W.check(w, "guidance scale w")
    if len(set(out)) != len(out):
        raise ValueError(f"guidance scales must be distinct, got {list(out)}")
    return out
