"""Mask-guided blending: keep the input outside the region that changes, during sampling (after FastDiME, Weng et
al. 2023, and ACE, Jeanneret et al. 2023). The product's default (defaults.BLEND says what it measured); the
library's SamplingConfig leaves it off, as the paper samples.

After each step the changing region is estimated from the predicted clean volumes: for a paired run the target's
minus the source class's at the same w, otherwise the target's minus the input. Voxels whose smoothed |change|
exceeds ``threshold`` times its largest value form the mask (its edge softened by the same smoothing); outside it
every trajectory of that w is replaced by the input noised to the new timestep, with one fixed noise for all of
them, so that outside the mask a paired difference is exactly zero and, at the last step, the output is the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .schedule import CLEAN, Schedule
from .settings import BlendConfig
from .solvers import States


class MaskBlend:
    """The sampler's per-step blend for one run (``y``: the input batch; ``noise``: its fixed noise)."""

    def __init__(
        self,
        config: BlendConfig,
        schedule: Schedule,
        y: torch.Tensor,
        noise: torch.Tensor,
        target: int,
        source: int | None,
    ):
        from monai.networks.layers import GaussianFilter

        self.config, self.schedule, self.y, self.noise = config, schedule, y, noise
        self.target, self.source = target, source
        self.smooth = GaussianFilter(3, sigma=config.sigma).to(y.device)

    def mask(self, change: torch.Tensor) -> torch.Tensor:
        magnitude = self.smooth(change.abs().float())
        peak = magnitude.amax()
        if peak <= 0:
            return torch.zeros_like(magnitude)
        hard = (magnitude > self.config.threshold * peak).float()
        return self.smooth(hard).clamp(0.0, 1.0).to(change.dtype)

    def __call__(self, xs: States, clean: States, *, index: int, total: int, s: int) -> None:
        """Blend ``xs`` (just stepped to timestep ``s``; ``clean`` the clean predictions of this step) in place: the
        loop's :class:`~ControlCGLib.sampling.solvers.Correction`."""
        x0s = clean
        if (index + 1) / total <= self.config.start and s != CLEAN:
            return
        y_s = self.y if s == CLEAN else self.schedule.q_sample(self.y, s, self.noise)
        for w in _scales(xs):
            other = x0s.get((self.source, w)) if self.source is not None else None
            m = self.mask(x0s[(self.target, w)] - (other if other is not None else self.y))
            for key in [k for k in xs if k[1] == w]:
                xs[key] = m * xs[key] + (1 - m) * y_s


def _scales(xs: States) -> Sequence[float]:
    return sorted({w for _, w in xs})
