"""A toy 3D problem small enough to train on a CPU in a minute: two classes of soft balls.

Class 0 holds a small ball, class 1 a large one; each volume has its own centre, radius and brightness, so a
counterfactual must change the size (the class) while keeping the individual's appearance (brightness, position).
Used by the end-to-end learning test and by ``controlcg toy-demo``, which shows the whole method working without any
download; training/toy.py trains its model.
"""

from __future__ import annotations

import torch

from ..defaults import w_key

#: Mean radius (voxels) of each class, and the spread of radius and centre within a class.
RADII = (3.0, 5.5)
RADIUS_JITTER = 0.5
CENTRE_JITTER = 2.0
BRIGHTNESS = (0.2, 1.0)


def ball(size: int, centre: torch.Tensor, radius: float, softness: float = 0.7) -> torch.Tensor:
    """A soft ball in [0, 1] on a size**3 grid."""
    axis = torch.arange(size, dtype=torch.float32)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    dist = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2).sqrt()
    return torch.sigmoid((radius - dist) / softness)


def toy_batch(n: int, generator: torch.Generator, size: int = 16, labels: torch.Tensor | None = None):
    """``n`` volumes (n, 1, size, size, size) in [-1, 1], their labels and their centres."""
    if labels is None:
        labels = torch.randint(0, 2, (n,), generator=generator)
    centres = (size - 1) / 2 + (torch.rand(n, 3, generator=generator) * 2 - 1) * CENTRE_JITTER
    radii = torch.tensor([RADII[int(c)] for c in labels]) + (torch.rand(n, generator=generator) * 2 - 1) * RADIUS_JITTER
    lo, hi = BRIGHTNESS
    brightness = lo + torch.rand(n, generator=generator) * (hi - lo)
    volumes = torch.stack([b * ball(size, c, float(r)) for c, r, b in zip(centres, radii, brightness)])[:, None]
    return volumes * 2 - 1, labels.long(), centres


def ball_brightness(x: torch.Tensor) -> torch.Tensor:
    """Peak intensity in [0, 1] of model-range volumes (..., D, H, W): the mean of the 20 brightest voxels."""
    return ((x + 1) / 2).clamp(0, 1).flatten(-3).topk(20, dim=-1).values.mean(-1)


def ball_volume(x: torch.Tensor) -> torch.Tensor:
    """Volume (voxels) of the object in model-range volumes (..., D, H, W): voxels above half its own peak."""
    unit = ((x + 1) / 2).clamp(0, 1)
    half = ball_brightness(x)[..., None, None, None] / 2
    return (unit > half).flatten(-3).sum(-1).float()


def toy_summary(y0: torch.Tensor, counterfactuals: dict[float, torch.Tensor]) -> dict:
    """The ball's volume and brightness in the input and in each counterfactual (keyed by w_key)."""

    def measures(x: torch.Tensor) -> dict[str, float]:
        return {"volume": float(ball_volume(x)), "brightness": float(ball_brightness(x))}

    return {"input": measures(y0), "counterfactuals": {w_key(w): measures(x) for w, x in counterfactuals.items()}}
