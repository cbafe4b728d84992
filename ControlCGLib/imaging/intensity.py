"""Intensity normalisation of the paper: min-max with the 99.5th percentile of the brain as max, then the model range.

The minimum is the brain's minimum (0 for a skull-stripped scan's background); values above the percentile clip to 1.
"""

from __future__ import annotations

import numpy as np

from ..model.config import IntensityConfig


def normalization_range(volume: np.ndarray, mask: np.ndarray | None = None, config: IntensityConfig | None = None):
    """(low, high) of the paper's min-max: the brain's minimum and its ``percentile``-th percentile."""
    config = config or IntensityConfig()
    v = np.asarray(volume, dtype=np.float32)
    if not np.isfinite(v).all():
        raise ValueError("the image contains NaN or infinite values; fix or mask them before normalising")
    m = (v != 0) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != v.shape:
        raise ValueError(f"mask shape {m.shape} differs from the image shape {v.shape}")
    if not m.any():
        raise ValueError("the image (or its mask) is empty: nothing to normalise")
    values = v[m]
    lo = float(values.min())
    hi = float(np.percentile(values, config.percentile))
    if hi <= lo:
        raise ValueError(f"the image is constant inside the brain (value {lo}); it cannot be normalised")
    return lo, hi


def normalize(volume: np.ndarray, mask: np.ndarray | None = None, config: IntensityConfig | None = None) -> np.ndarray:
    """Volume scaled to [0, 1] using statistics inside ``mask`` (everything non-zero when None)."""
    lo, hi = normalization_range(volume, mask, config)
    return np.clip((np.asarray(volume, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def normalize_brain(
    volume: np.ndarray, mask: np.ndarray, config: IntensityConfig | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """The one intensity routine of training, simulation and inference: min-max inside the brain ``mask`` of a scan
    already on the model grid, zero outside it. Returns the unit volume and the (low, high) it used."""
    low, high = normalization_range(volume, mask, config)
    return scale_brain(volume, mask, low, high), (low, high)


def scale_brain(volume: np.ndarray, mask: np.ndarray, low: float, high: float) -> np.ndarray:
    """``volume`` mapped with a given (low, high) to [0, 1] inside ``mask``, zero outside (e.g. a subject's true
    counterfactual scaled like its scan, so that their difference is a true intensity change)."""
    v = np.asarray(volume, dtype=np.float32)
    return np.where(mask, np.clip((v - low) / (high - low), 0.0, 1.0), 0.0).astype(np.float32)


def to_model_range(unit, config: IntensityConfig | None = None):
    """[0, 1] -> the model's range (works on numpy arrays and torch tensors)."""
    return (config or IntensityConfig()).to_model(unit)


def from_model_range(x, config: IntensityConfig | None = None):
    """The model's range -> [0, 1] (not clipped: a counterfactual may overshoot slightly)."""
    return (config or IntensityConfig()).from_model(x)
