"""The toy problem's model (data/toy.py: two classes of soft balls), trained from scratch on a CPU in a minute."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..data.toy import toy_batch
from ..model.config import ModelConfig, NoiseConfig, ScheduleConfig, UNetConfig
from ..model.networks import ClassConditionalUNet
from ..sampling.noise import make_generator
from .loss import diffusion_loss


def toy_config(size: int = 16) -> ModelConfig:
    """A tiny model for the toy problem (about 0.2 M parameters)."""
    return ModelConfig(
        name="toy",
        grid=(size, size, size),
        unet=UNetConfig(
            channels=(16, 16, 32), attention_levels=(False, True, True), norm_num_groups=8, num_head_channels=16
        ),
        class_names=("small", "large"),
        context_dim=32,
        p_uncond=0.2,
        schedule=ScheduleConfig(num_train_timesteps=1000),
        noise=NoiseConfig(kind="pyramid", discount=0.5, levels=2),
    )


@dataclass
class ToyTraining:
    model: ClassConditionalUNet
    losses: list[float]


def train_toy(
    steps: int = 600,
    batch: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
    size: int = 16,
    on_step: Callable[[int, float], None] | None = None,
    attention_init: bool = True,
) -> ToyTraining:
    """Train the toy model from scratch with the library's own loss; deterministic for a seed."""
    torch.manual_seed(seed)
    model = ClassConditionalUNet(toy_config(size))
    if attention_init:
        # MONAI zero-initialises each transformer's output projection; a model trained for minutes then barely
        # uses self-attention (<1% of its output), leaving injection nothing to act on. Start it at full strength.
        for name, module in model.named_modules():
            if name.endswith("proj_out"):
                for sub in module.modules():
                    if hasattr(sub, "reset_parameters") and sub is not module:
                        sub.reset_parameters()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = make_generator(seed)
    losses = []
    model.train()
    for i in range(steps):
        x0, labels, _ = toy_batch(batch, generator, size)
        loss = diffusion_loss(model, x0, labels, generator=generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(i + 1, losses[-1])
    model.eval()
    return ToyTraining(model, losses)
