"""The diagnostic classifier the counterfactuals explain (paper: 3D DenseNet-121): one verdict function shared by the
command line, Slicer and the evaluation, its features (the KIDs) and its accuracy on a data set.

:class:`VolumeClassifier` is how the product asks it: a [0, 1] volume in, a verdict out; it is the one place that
brings a volume into the classifier's own intensity range.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def predict_proba(model: torch.nn.Module, volumes: torch.Tensor) -> torch.Tensor:
    """Class probabilities (B, C) for volumes (B, 1, D, H, W) in model range."""
    was = model.training
    model.eval()
    try:
        return F.softmax(model(volumes).float(), dim=1)
    finally:
        model.train(was)


@torch.no_grad()
def features(model: torch.nn.Module, volume) -> np.ndarray:
    """The classifier's penultimate features of one volume (D, H, W) in model range: MONAI DenseNet's globally
    pooled last dense block (``class_layers`` up to ``flatten``), what the evaluation's KID compares."""
    v = torch.as_tensor(np.asarray(volume, dtype=np.float32))
    if v.ndim != 3:
        raise ValueError(f"expected one 3D volume, got shape {tuple(v.shape)}")
    was = model.training
    model.eval()
    try:
        x = model.features(v[None, None].to(next(model.parameters()).device))
        layers = model.class_layers
        return layers.flatten(layers.pool(layers.relu(x)))[0].float().cpu().numpy()
    finally:
        model.train(was)


def classify(model: torch.nn.Module, volume, class_names: Sequence[str]) -> dict[str, float]:
    """The classifier's verdict on one volume (D, H, W) in model range: probability per class name."""
    v = torch.as_tensor(np.asarray(volume, dtype=np.float32))
    if v.ndim != 3:
        raise ValueError(f"expected one 3D volume, got shape {tuple(v.shape)}")
    device = next(model.parameters()).device
    p = predict_proba(model, v[None, None].to(device))[0]
    return {name: float(p[i]) for i, name in enumerate(class_names)}


def grid_factors(fine: Sequence[int], coarse: Sequence[int]) -> tuple[int, ...]:
    """Whole factors from a model grid to a classifier's coarser one (1 where they agree); refuses any other pair,
    naming both grids."""
    fine, coarse = tuple(int(g) for g in fine), tuple(int(g) for g in coarse)
    if len(fine) != 3 or len(coarse) != 3 or any(f % c for f, c in zip(fine, coarse)):
        raise ValueError(
            f"the classifier's grid {list(coarse)} is not the model grid {list(fine)} nor a whole coarsening of it"
        )
    return tuple(f // c for f, c in zip(fine, coarse))


class VolumeClassifier:
    """A loaded classifier (or judge) asked about [0, 1] volumes (D, H, W) on its grid, or on a grid a whole factor
    finer (a 2 mm model's outputs asked of a 4 mm classifier): those are averaged over blocks of that factor first,
    the anti-aliasing the preparation applies when it brings a scan down to a coarser grid."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.config = model.config

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.config.class_names)

    def on_grid(self, unit) -> np.ndarray:
        """``unit`` on the classifier's grid (block means where it is a whole factor finer)."""
        unit = np.asarray(unit, dtype=np.float32)
        if unit.ndim != 3:
            raise ValueError(f"expected one 3D volume, got shape {unit.shape}")
        factors = grid_factors(unit.shape, self.config.grid)
        if factors == (1, 1, 1):
            return unit
        return F.avg_pool3d(torch.from_numpy(unit)[None, None], factors)[0, 0].numpy()

    def verdict(self, unit) -> dict[str, float]:
        """Probability per class name."""
        return classify(self.model, self.config.intensity.to_model(self.on_grid(unit)), self.class_names)

    def features(self, unit) -> np.ndarray:
        """The penultimate features (:func:`features`) the KIDs compare."""
        return features(self.model, self.config.intensity.to_model(self.on_grid(unit)))


def evaluate(model: torch.nn.Module, dataset, batch_size: int = 8) -> float:
    """Accuracy on ``dataset`` of (volume, class index) pairs."""
    correct = 0
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
        volumes = torch.stack([v for v, _ in items])
        labels = torch.tensor([c for _, c in items])
        correct += int((predict_proba(model, volumes).argmax(1) == labels).sum())
    return correct / max(1, len(dataset))
