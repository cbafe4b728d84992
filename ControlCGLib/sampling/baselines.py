"""The paper's baselines (its Table 2), run through the product's own sampling loop with the same model and schedule.

- **ILVR** (Choi et al., ICCV 2021): start from the input noised to depth T, and after every step replace the low
  frequencies of x_s by those of the input noised to s: ``x_s <- x_s - LP(x_s) + LP(q(y0, s))``, with LP = average
  pooling by the factor n and trilinear up-sampling back. Class-conditional with the same guidance as ours.
- **DDIM inversion** (Song et al., ICLR 2021; the paper's [15]): encode the input deterministically (eta = 0) to depth
  T with the model conditioned on its source class (or the null class), then decode from there toward the target
  class with guidance.

Depths follow the paper's 1000-step chain: T = 250 and 500 are 25 % and 50 % of the chain, the same fractions of our
step grid (the start strength, ``SamplingConfig.start_strength``). Neither baseline injects attention (that is the
paper's own method) nor blends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from .noise import make_generator, sample_noise
from .sampler import Counterfactuals, as_batch, counterfactual, sampling_timesteps
from .schedule import CLEAN, Schedule
from .settings import BlendConfig, InjectionConfig, SamplingConfig

MethodKind = Literal["ours", "ilvr", "ddim-inversion"]


@dataclass(frozen=True)
class Method:
    """One way of making counterfactuals, as the evaluation tables name it."""

    name: str
    kind: MethodKind
    start_strength: float | None = None  # fraction of the chain the run starts from (T / 1000); None: the sampling's
    factor: int = 2  # ILVR's down-sampling factor n
    inversion_label: str = "source"  # DDIM inversion: encode with the "source" class or the "null" class
    paired: bool = False  # ours, DDIM inversion: also run the source class's trajectory (sampler.py)
    inject: bool | None = None  # ours: None = injection as the sampling settings say; True: the paper's; False: none
    blend: bool | None = None  # mask-guided blending of the input during sampling (blending.py); None: the sampling's
    change: str = "intensity"  # how the change is shown (pipeline.CHANGES): "deformation" or "intensity"

    def sampled_as(self) -> Method:
        """This method with what only names or shows it blanked: two methods that sample alike share one run."""
        return dataclasses.replace(self, name="", change="")

    def __post_init__(self):
        if self.kind not in get_args(MethodKind):
            raise ValueError(f"unknown method kind {self.kind!r}")
        if self.start_strength is not None and not 0 < self.start_strength <= 1:
            raise ValueError(f"{self.name}: the start strength must be in (0, 1], got {self.start_strength}")
        if self.factor < 1:
            raise ValueError(f"{self.name}: the ILVR factor must be >= 1, got {self.factor}")
        if self.inversion_label not in ("source", "null"):
            raise ValueError(f"{self.name}: inversion_label must be 'source' or 'null'")


# The paper's settings: ILVR-1 n=2 T=250, ILVR-2 n=2 T=500, ILVR-3 n=4 T=250; DDIM inversion T=250 and T=500.
PAPER_BASELINES = (
    Method("ILVR-1", "ilvr", start_strength=0.25, factor=2, blend=False),
    Method("ILVR-2", "ilvr", start_strength=0.5, factor=2, blend=False),
    Method("ILVR-3", "ilvr", start_strength=0.25, factor=4, blend=False),
    Method("DDIM-inv-250", "ddim-inversion", start_strength=0.25, blend=False),
    Method("DDIM-inv-500", "ddim-inversion", start_strength=0.5, blend=False),
)


def low_pass(x: torch.Tensor, factor: int) -> torch.Tensor:
    """ILVR's phi_n: average-pool by ``factor``, then trilinear up-sampling to the original size."""
    if factor == 1:
        return x
    if any(n % factor for n in x.shape[2:]):
        raise ValueError(f"the grid {tuple(x.shape[2:])} is not divisible by the ILVR factor {factor}")
    return F.interpolate(F.avg_pool3d(x, factor), size=x.shape[2:], mode="trilinear", align_corners=False)


class LowFrequencyReplacement:
    """ILVR's correction after every step: ``x_s <- x_s - LP(x_s) + LP(q(y0, s))`` (a solvers.Correction). The noised
    reference has its own generator, apart from the loop's stream; one draw per trajectory and step."""

    def __init__(self, y: torch.Tensor, factor: int, schedule: Schedule, noise_config, seed: int):
        self.y, self.factor, self.schedule, self.noise_config = y, factor, schedule, noise_config
        self.reference = low_pass(y, factor)
        self.generator = make_generator(seed + 7919)

    def __call__(self, xs, clean, *, index: int, total: int, s: int) -> None:
        for key, x in xs.items():
            if s == CLEAN:
                y_s = self.reference
            else:
                noise = sample_noise(tuple(self.y.shape), self.generator, self.noise_config).to(
                    self.y.device, self.y.dtype
                )
                y_s = low_pass(self.schedule.q_sample(self.y, s, noise), self.factor)
            xs[key] = x - low_pass(x, self.factor) + y_s


def ilvr(
    model,
    y0: torch.Tensor,
    target: str | int,
    scales: float | Sequence[float],
    sampling: SamplingConfig | None = None,
    *,
    factor: int = 2,
    start_strength: float | None = None,
    seed: int = 0,
    **loop,
) -> Counterfactuals:
    """ILVR counterfactuals of ``y0`` (model grid and range) toward ``target``, one per w, started at
    ``start_strength`` (None: the sampling's)."""
    sampling = sampling or SamplingConfig()
    start = sampling.start_strength if start_strength is None else start_strength
    sampling = dataclasses.replace(sampling, start_strength=start, injection=None)
    parameter = next(model.parameters())
    y = as_batch(y0, model.config.grid).to(parameter.device, parameter.dtype)
    noise_config = model.config.noise if sampling.noise == "pyramid" else None
    replace = LowFrequencyReplacement(y, factor, Schedule(model.config.schedule), noise_config, seed)
    return counterfactual(model, y0, target, scales, sampling, seed=seed, corrections=[replace], **loop)


@torch.no_grad()
def ddim_invert(model, y0: torch.Tensor, label: str | int | None, sampling: SamplingConfig) -> torch.Tensor:
    """x at the first timestep of a run of ``sampling``: the input carried there along the deterministic DDIM path,
    with the model conditioned on ``label`` (None: the null class)."""
    config = model.config
    schedule = Schedule(config.schedule)
    timesteps = sampling_timesteps(schedule, sampling)
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
            x = schedule.ddim_reverse_step(x0, eps, s=s, t=t)
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
    start_strength: float | None = None,
    seed: int = 0,
    pair_with: str | int | None = None,
    **loop,
) -> Counterfactuals:
    """DDIM-inversion counterfactuals: encode with ``source`` (None: the null class) up to ``start_strength`` (None:
    the sampling's), decode toward ``target``. ``pair_with`` (a class): also decode toward it from the same inverted
    start (the paired change, sampler.py); this is ours started from an exact inversion instead of the noised input
    (the ablation ours-inversion-start, docs/evaluation/cohort_v2/report.md)."""
    sampling = sampling or SamplingConfig()
    start_at = sampling.start_strength if start_strength is None else start_strength
    sampling = dataclasses.replace(sampling, start_strength=start_at, injection=None, solver="ddim", eta=0.0)
    start = ddim_invert(model, y0, source, sampling)
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
    changes = {}
    if method.blend is not None:
        changes["blend"] = BlendConfig() if method.blend else None
    if method.start_strength is not None:
        changes["start_strength"] = method.start_strength
    sampling = dataclasses.replace(sampling or SamplingConfig(), **changes)
    if method.kind == "ours":
        if method.inject is not None and (sampling.injection is not None) != method.inject:
            sampling = dataclasses.replace(sampling, injection=InjectionConfig() if method.inject else None)
        paired = source if method.paired else None
        return counterfactual(model, y0, target, scales, sampling, seed=seed, source=paired, **loop)
    if method.kind == "ilvr":
        return ilvr(model, y0, target, scales, sampling, factor=method.factor, seed=seed, **loop)
    label = source if method.inversion_label == "source" else None
    paired = source if method.paired else None
    return ddim_inversion(model, y0, label, target, scales, sampling, seed=seed, pair_with=paired, **loop)
