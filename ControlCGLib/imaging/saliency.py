"""Saliency maps: where the counterfactual differs from the input, inside the brain."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Saliency:
    signed: np.ndarray  # counterfactual - input; positive where the counterfactual is brighter
    absolute: np.ndarray  # |signed|, zero below the threshold


def _as_array(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"{name} must be a 3D volume, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def saliency_maps(input_volume, counterfactual, mask=None, threshold: float = 0.0) -> Saliency:
    """Signed and absolute difference maps restricted to ``mask`` (the brain); differences with absolute value
    below ``threshold`` are set to zero in both, so faint noise does not light up the overlay."""
    a = _as_array(input_volume, "input")
    b = _as_array(counterfactual, "counterfactual")
    if a.shape != b.shape:
        raise ValueError(f"input {a.shape} and counterfactual {b.shape} must have the same shape")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    signed = b - a
    if mask is not None:
        m = np.asarray(mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else mask).astype(bool)
        if m.shape != a.shape:
            raise ValueError(f"mask {m.shape} must have the shape of the input {a.shape}")
        if not m.any():
            raise ValueError("the brain mask is empty: no voxel would be shown")
        signed = np.where(m, signed, 0.0).astype(np.float32)
    if threshold > 0:
        signed = np.where(np.abs(signed) >= threshold, signed, 0.0).astype(np.float32)
    return Saliency(signed=signed, absolute=np.abs(signed))
