"""Quality of a counterfactual against its input and, on simulated subjects, against the truth.

All volumes are (z, y, x) arrays on the model grid in [0, 1]. SSIM is MONAI's (Gaussian window 11, sigma 1.5,
data range 1); the saliency AUROC is MONAI's ROC AUC of |counterfactual - input| against the voxels the true
counterfactual changed by more than ``CHANGED`` (5 % of the intensity range), inside the brain mask.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

CHANGED = 0.05


def _volume(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32))[None, None]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from monai.metrics import SSIMMetric

    if np.shape(a) != np.shape(b):
        raise ValueError(f"SSIM needs volumes of one shape, got {np.shape(a)} and {np.shape(b)}")
    return float(SSIMMetric(spatial_dims=3, data_range=1.0)(_volume(a), _volume(b)).mean())


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))


def saliency_auroc(saliency: np.ndarray, true_change: np.ndarray, mask: np.ndarray, changed: float = CHANGED) -> float:
    """How well |saliency| ranks the truly changed voxels above the unchanged ones (0.5 = chance, 1 = perfect)."""
    from monai.metrics import compute_roc_auc

    mask = np.asarray(mask, dtype=bool)
    truth = np.abs(np.asarray(true_change))[mask] > changed
    if truth.all() or not truth.any():
        raise ValueError("the true change map needs both changed and unchanged voxels inside the mask for an AUROC")
    score = np.abs(np.asarray(saliency, dtype=np.float32))[mask]
    return float(compute_roc_auc(torch.from_numpy(score), torch.from_numpy(truth.astype(np.float32))))


def saliency_dice(saliency: np.ndarray, true_change: np.ndarray, mask: np.ndarray, threshold: float = CHANGED) -> float:
    """MONAI's Dice of the thresholded |saliency| against the truly changed voxels (both > ``threshold``), in mask."""
    from monai.metrics import compute_dice

    mask = np.asarray(mask, dtype=bool)
    pred = (np.abs(np.asarray(saliency)) > threshold) & mask
    truth = (np.abs(np.asarray(true_change)) > threshold) & mask
    if not truth.any():
        raise ValueError("the true change map has no changed voxel inside the mask")
    as_tensor = lambda a: torch.from_numpy(a.astype(np.float32))[None, None]  # noqa: E731
    return float(compute_dice(as_tensor(pred), as_tensor(truth), include_background=True, ignore_empty=False))


def fid(features_a, features_b) -> float:
    """MONAI's Fréchet distance between two sets of feature vectors (N, D), as the paper computes its FIDs on the
    diagnostic classifier's features. Needs at least two vectors per set."""
    from monai.metrics import FIDMetric

    a = torch.as_tensor(np.asarray(features_a, dtype=np.float64))
    b = torch.as_tensor(np.asarray(features_b, dtype=np.float64))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"FID needs two (N, D) feature sets of one D, got {tuple(a.shape)} and {tuple(b.shape)}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"FID needs at least two images per set, got {len(a)} and {len(b)}")
    with warnings.catch_warnings():  # with fewer images than features the covariances are singular: expected here
        warnings.simplefilter("ignore")
        return float(FIDMetric()(a, b))
