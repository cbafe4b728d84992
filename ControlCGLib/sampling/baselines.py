"""The paper's baselines (its Table 2), run through the product's own sampling loop with the same model and schedule.

- **ILVR** (Choi et al., ICCV 2021): start from the input noised to depth T, and after every step replace the low
  frequencies of x_s by those of the input noised to s: ``x_s <- x_s - LP(x_s) + LP(q(y0, s))``, with LP = average
  pooling by the factor n and trilinear up-sampling back. Class-conditional with the same guidance as ours.
- **DDIM inversion** (Song et al., ICLR 2021; the paper's [15]): encode the input deterministically (eta = 0) to depth
  T with the model conditioned on its source class (or the null class), then decode from there toward the target
  class with guidance.

Depths follow the paper's 1000-step chain: T = 250 and 500 are 25 % and 50 % of the chain, the same fractions of our
step grid (``SamplingConfig.start_strength``). Neither baseline injects attention (that is the paper's own method).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from .blending import BlendConfig
from .noise import make_generator, sample_noise
from .sampler import Counterfactuals, as_batch, counterfactual, sampling_timesteps
from .schedule import CLEAN, Schedule
from .settings import InjectionConfig, SamplingConfig

MethodKind = Literal["ours", "ilvr", "ddim-inversion"]


@dataclass(frozen=True)
class Method:
    """One way of making counterfactuals, as the evaluation tables name it."""

    name: str
    kind: MethodKind
    depth: float = 1.0  # fraction of the chain the run starts from (T / 1000)
    factor: int = 2  # ILVR's down-sampling factor n
    inversion_label: str = "source"  # DDIM inversion: encode with the "source" class or the "null" class
    paired: bool = False  # ours, DDIM inversion: also run the source class's trajectory (sampler.py)
    inject: bool | None = None  # ours: None = injection as the sampling settings say; True: the paper's; False: none
    blend: bool = False  # ours, DDIM inversion: mask-guided blending of the input during sampling (blending.py)

    def __post_init__(self):
        if self.kind not in get_args(MethodKind):
            raise ValueError(f"unknown method kind {self.kind!r}")
        if not 0 < self.depth <= 1:
            raise ValueError(f"{self.name}: depth must be in (0, 1], got {self.depth}")
        if self.factor < 1:
            raise ValueError(f"{self.name}: the ILVR factor must be >= 1, got {self.factor}")
        if self.inversion_label not in ("source", "null"):
            raise ValueError(f"{self.name}: inversion_label must be 'source' or 'null'")


# The paper's settings: ILVR-1 n=2 T=250, ILVR-2 n=2 T=500, ILVR-3 n=4 T=250; DDIM inversion T=250 and T=500.
PAPER_BASELINES = (
    Method("ILVR-1", "ilvr", depth=0.25, factor=2),
    Method("ILVR-2", "ilvr", depth=0.5, factor=2),
    Method("ILVR-3", "ilvr", depth=0.25, factor=4),
    Method("DDIM-inv-250", "ddim-inversion", depth=0.25),
    Method("DDIM-inv-500", "ddim-inversion", depth=0.5),
)


def low_pass(x: torch.Tensor, factor: int) -> torch.Tensor:
    """ILVR's phi_n: average-pool by ``factor``, then trilinear up-sampling to the original size."""
    if factor == 1:
        return x
    if any(n % factor for n in x.shape[2:]):
        raise ValueError(f"the grid {tuple(x.shape[2:])} is not divisible by the ILVR factor {factor}")
    return F.interpolate(F.avg_pool3d(x, factor), size=x.shape[2:], mode="trilinear", align_corners=False)


def ilvr(
    model,
    y0: torch.Tensor,
    target: str | int,
    scales: float | Sequence[float],
    sampling: SamplingConfig | None = None,
    *,
    factor: int = 2,
    depth: float = 0.25,
    seed: int = 0,
    **loop,
) -> Counterfactuals:
    """ILVR counterfactuals of ``y0`` (model grid and range) toward ``target``, one per w."""
    sampling = dataclasses.replace(sampling or SamplingConfig(), start_strength=depth, injection=None)
    schedule = Schedule(model.config.schedule)
    parameter = next(model.parameters())
    y = as_batch(y0, model.config.grid).to(parameter.device, parameter.dtype)
    reference = low_pass(y, factor)
    generator = make_generator(seed + 7919)  # the reference's own noise, apart from the loop's stream
    noise_cfg = model.config.noise if sampling.noise == "pyramid" else None

    def replace_low_frequencies(x: torch.Tensor, s: int) -> torch.Tensor:
        if s == CLEAN:
            y_s = reference
        else:
            noise = sample_noise(tuple(y.shape), generator, noise_cfg).to(y.device, y.dtype)
            y_s = low_pass(schedule.q_sample(y, s, noise), factor)
        return x - low_pass(x, factor) + y_s

    return counterfactual(model, y0, target, scales, sampling, seed=seed, after_step=replace_low_frequencies, **loop)


@torch.no_grad()
def ddim_invert(
    model, y0: torch.Tensor, label: str | int | None, sampling: SamplingConfig, depth: float
) -> torch.Tensor:
    """x at the first timestep of a run of depth ``depth``: the input carried there along the deterministic DDIM
    path, with the model conditioned on ``label`` (None: the null class)."""
    config = model.config
    schedule = Schedule(config.schedule)
    timesteps = sampling_timesteps(schedule, dataclasses.replace(sampling, start_strength=depth))
    parameter = next(model.parameters())
    device = parameter.device
    x = as_batch(y0, config.grid).to(device, parameter.dtype)
    index = model.null_class if label is None else config.class_index(label)
    labels = model.labels(index, 1, device)
    was_training = model.training
    model.eval()
    try:
        for t, s in reversed(schedule.pairs(timesteps)):  # from clean up to timesteps[0]
            at = t if s == CLEAN else s  # from the clean input the model is asked at the first grid timestep
            v = model(x, torch.full((1,), at, dtype=torch.long, device=device), labels)
            x0, eps = schedule.split_v(x, v, at)
            x = schedule.ddim_reverse_step(x0, eps, s, t)
    finally:
        model.train(was_training)
    return x


def ddim_inversion(
    model,
    y0: torch.Tensor,
    source: str | int | None,
    target: str | int,
    scales: float | Sequence[float],
    sampling: SamplingConfig | None = None,
    *,
    depth: float = 0.25,
    seed: int = 0,
    pair_with: str | int | None = None,
    **loop,
) -> Counterfactuals:
    """DDIM-inversion counterfactuals: encode with ``source`` (None: the null class), decode toward ``target``.
    ``pair_with`` (a class): also decode toward it from the same inverted start (the paired change, sampler.py);
    this is ours started from an exact inversion instead of the noised input, an option measured in issue 16."""
    sampling = dataclasses.replace(
        sampling or SamplingConfig(), start_strength=depth, injection=None, method="ddim", eta=0.0
    )
    start = ddim_invert(model, y0, source, sampling, depth)
    return counterfactual(model, y0, target, scales, sampling, seed=seed, start=start, source=pair_with, **loop)


def run_method(
    method: Method,
    model,
    y0: torch.Tensor,
    source: str,
    target: str,
    scales: float | Sequence[float],
    sampling: SamplingConfig | None = None,
    *,
    seed: int = 0,
    **loop,
) -> Counterfactuals:
    """One entry point for every method, so that the evaluation treats them alike."""
    if method.blend:
        sampling = dataclasses.replace(sampling or SamplingConfig(), blend=BlendConfig())
    if method.kind == "ours":
        sampling = dataclasses.replace(sampling or SamplingConfig(), start_strength=method.depth)
        if method.inject is not None and (sampling.injection is not None) != method.inject:
            sampling = dataclasses.replace(sampling, injection=InjectionConfig() if method.inject else None)
        paired = source if method.paired else None
        return counterfactual(model, y0, target, scales, sampling, seed=seed, source=paired, **loop)
    if method.kind == "ilvr":
        return ilvr(model, y0, target, scales, sampling, factor=method.factor, depth=method.depth, seed=seed, **loop)
    label = source if method.inversion_label == "source" else None
    paired = source if method.paired else None
    return ddim_inversion(
        model, y0, label, target, scales, sampling, depth=method.depth, seed=seed, pair_with=paired, **loop
    )
