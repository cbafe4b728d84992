"""Quality of a counterfactual against its input and, on simulated subjects, against the truth.

All volumes are (z, y, x) arrays on the model grid in [0, 1]. SSIM is MONAI's (Gaussian window 11, sigma 1.5,
data range 1); the saliency AUROC is MONAI's ROC AUC of |counterfactual - input| against the voxels the true
counterfactual changed by more than ``CHANGED`` (5 % of the intensity range), inside the brain mask.
"""

from __future__ import annotations

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


def kid(features_a, features_b) -> float:
    """Kernel inception distance between two sets of feature vectors (N, D): the unbiased estimate of the squared MMD
    under the cubic polynomial kernel (x·y / D + 1)^3 (Bińkowski et al. 2018), on the diagnostic classifier's features
    as the paper's FIDs are. Unlike the Fréchet distance it has no bias that grows as the sets shrink below D, so it
    still means something at a few dozen images; it can be slightly negative when the sets are alike. Needs at least
    two vectors per set."""
    a, b = np.asarray(features_a, dtype=np.float64), np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"KID needs two (N, D) feature sets of one D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"KID needs at least two images per set, got {len(a)} and {len(b)}")
    kernel = lambda x, y: (x @ y.T / a.shape[1] + 1.0) ** 3  # noqa: E731
    kaa, kbb, kab = kernel(a, a), kernel(b, b), kernel(a, b)
    m, n = len(a), len(b)
    within_a = (kaa.sum() - np.trace(kaa)) / (m * (m - 1))
    within_b = (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
    return float(within_a + within_b - 2.0 * kab.mean())


def change_scores(cf, truth, unit, mask, changed: float = CHANGED) -> dict[str, float | None]:
    """How the shown change ``cf - unit`` agrees with the true change ``truth - unit`` inside ``mask``: signed and
    scale-free, so that a fixed map that merely overlaps the right voxels (what AUROC and Dice reward) scores no better
    than its fit.

    - ``change_r2``: 1 - ||cf - truth||^2 / ||unit - truth||^2 (0: no better than showing no change; 1: the truth);
    - ``change_r2_fit``: the same after the best scalar multiple of the shown change (right pattern, wrong strength);
    - ``change_r``: Pearson r of the two changes over the brain;
    - ``sign_agreement``: share of the truly changed voxels (|true change| > ``changed``) changed the same way;
    - ``change_sse``, ``change_sst``: the two sums of squares, so that R² can be pooled over subjects (a mild case's
      own R² is unstable: its denominator is tiny).

    None where a score is undefined (no true change, or a constant map)."""
    m = np.asarray(mask, dtype=bool)
    d = (np.asarray(cf, dtype=np.float64) - np.asarray(unit, dtype=np.float64))[m]
    t = (np.asarray(truth, dtype=np.float64) - np.asarray(unit, dtype=np.float64))[m]
    sse, sst, dd = float(np.sum((d - t) ** 2)), float(np.sum(t**2)), float(np.sum(d**2))
    alpha = float(np.dot(d, t)) / dd if dd > 0 else 0.0
    truly = np.abs(t) > changed
    return {
        "change_r2": 1.0 - sse / sst if sst > 0 else None,
        "change_r2_fit": 1.0 - float(np.sum((alpha * d - t) ** 2)) / sst if sst > 0 else None,
        "change_r": float(np.corrcoef(d, t)[0, 1]) if d.std() > 0 and t.std() > 0 else None,
        "sign_agreement": float(np.mean(np.sign(d[truly]) == np.sign(t[truly]))) if truly.any() else None,
        "change_sse": sse,
        "change_sst": sst,
    }


def closer_to_own(shown_change, own_change, other_change, mask) -> bool | None:
    """The swap test: does the shown change correlate better with this subject's true change than with another
    subject's? By correlation, so that the strength of the change does not decide it; None for a constant map (no
    change shown: nothing to attribute)."""
    m = np.asarray(mask, dtype=bool)
    d = np.asarray(shown_change, dtype=np.float64)[m]
    own, other = (np.asarray(c, dtype=np.float64)[m] for c in (own_change, other_change))
    if d.std() == 0 or own.std() == 0 or other.std() == 0:
        return None
    return float(np.corrcoef(d, own)[0, 1]) > float(np.corrcoef(d, other)[0, 1])


def bootstrap_ci(values, n: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (one value per subject: subjects are what is sampled,
    seeds of one subject are not independent). None below two values."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if len(v) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return (round(float(lo), 4), round(float(hi), 4))
