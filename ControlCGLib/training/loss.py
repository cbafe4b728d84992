"""The one diffusion training step (v-prediction, pyramid noise, classifier-free-guidance label dropout).

Trainers (single process, DDP, the toy demo) own the optimiser, mixed precision and logging; they all compute the
loss here so that what the sampler assumes (v target, null row, noise kind) is what the model learnt.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model.networks import ClassConditionalUNet
from ..sampling.noise import sample_noise
from ..sampling.schedule import Schedule


def drop_labels(
    labels: torch.Tensor, null_class: int, p_uncond: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Replace each label by the null class with probability ``p_uncond``."""
    if p_uncond <= 0:
        return labels
    drop = torch.rand(labels.shape, generator=generator) < p_uncond
    return torch.where(drop.to(labels.device), torch.full_like(labels, null_class), labels)


def diffusion_loss(
    model: ClassConditionalUNet,
    x0: torch.Tensor,
    labels: torch.Tensor,
    schedule: Schedule | None = None,
    *,
    generator: torch.Generator | None = None,
    p_uncond: float | None = None,
    config=None,
) -> torch.Tensor:
    """Mean squared error between the model's v and the true v for a batch of clean volumes ``x0`` (B, 1, D, H, W)
    in model range and their class ``labels`` (B,). Timesteps, noise and label dropout are drawn from ``generator``
    (on the CPU, so a seed reproduces a run on any device)."""
    config = config or model.config  # a DistributedDataParallel wrapper has no .config: pass it
    schedule = schedule or Schedule(config.schedule)
    if x0.ndim != 5 or x0.shape[1] != 1:
        raise ValueError(f"expected clean volumes (B, 1, D, H, W), got shape {tuple(x0.shape)}")
    if tuple(x0.shape[2:]) != tuple(config.grid):
        raise ValueError(f"training volumes have shape {tuple(x0.shape[2:])}, the model grid is {tuple(config.grid)}")
    device = x0.device
    b = x0.shape[0]
    t = torch.randint(0, schedule.num_train_timesteps, (b,), generator=generator).to(device)
    noise = sample_noise(x0.shape, generator, config.noise).to(device, x0.dtype)
    p = config.p_uncond if p_uncond is None else p_uncond
    if not 0 <= p <= 1:
        raise ValueError(f"p_uncond must be in [0, 1], got {p}")
    labels = drop_labels(labels.long(), config.null_class, p, generator)
    x_t = schedule.q_sample(x0, t, noise)
    prediction = model(x_t, t, labels.to(device))
    target = schedule.velocity(x0, noise, t)
    return F.mse_loss(prediction.float(), target.float())
