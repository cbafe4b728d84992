"""The guided sampler: one loop that makes counterfactuals for the command line, Slicer and the evaluation.

Per step t -> s (paper Eqs. 2, 4, 5, 9):

1. the reference y0 is noised to y_t by Eq. 2 (inside the injection window);
2. the model function (guided_step.py) returns one guided v per w: a reference pass on y_t shared by every w, then
   conditional and unconditional passes injecting its attention tokens (Eq. 8), combined by Eq. 5. The sampler
   knows nothing of the UNet, the injection, autocast or the guidance formula;
3. the solver of each trajectory (solvers.py: DDIM, the strided DDPM posterior or DPM-Solver++(2M)) moves x_t to
   x_s;
4. the corrections (solvers.Correction: ILVR's low-frequency replacement, mask-guided blending) change the new x_s.

All noise comes from one CPU generator seeded by ``seed``, drawn in an order that does not depend on the number of w
values, so that a sweep equals separate runs and a seed reproduces its output bit for bit.

*Paired* runs (``source`` given, our departure from the paper; measured in docs/evaluation/report.md): the source
class's trajectory runs beside the target's from the same start with the same noise and the same reference pass; the
difference of the two ends is the change that the class alone makes (what both share -- the model redrawing anatomy it
does not know -- cancels). A source equal to the target is not sampled twice: its change is exactly zero.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..model.config import to_dict
from ..model.networks import ClassConditionalUNet
from ..progress import Cancelled, StepCallback, StepInfo, StopCallback
from .blending import MaskBlend
from .guidance import check_scales
from .guided_step import GuidedStep
from .noise import make_generator, sample_noise
from .schedule import Schedule
from .settings import SamplingConfig
from .solvers import Correction, make_solver


@dataclass
class Counterfactuals:
    """Result of one run: a counterfactual (D, H, W) in model range per guidance scale, and how it was made."""

    images: dict[float, torch.Tensor]
    target: int
    target_name: str
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    source_images: dict[float, torch.Tensor] | None = None  # paired runs: the source class's ends, same noise

    def __getitem__(self, w: float) -> torch.Tensor:
        return self.images[float(w)]

    def paired_change(self, w: float) -> torch.Tensor:
        """The paired change at ``w`` (target end minus source end, model grid and range); needs a paired run."""
        if self.source_images is None:
            raise ValueError("this run was not paired (no source class): there is no paired change")
        return self.images[float(w)] - self.source_images[float(w)]


def as_batch(y0: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Input as a (1, 1, D, H, W) float32 tensor, refusing the wrong shape or non-finite values."""
    if not isinstance(y0, torch.Tensor):
        raise TypeError(f"the input must be a torch.Tensor on the model grid, got {type(y0).__name__}")
    y = y0
    if y.ndim == 3:
        y = y[None, None]
    elif y.ndim == 4 and y.shape[0] == 1:
        y = y[None]
    if y.ndim != 5 or y.shape[:2] != (1, 1):
        raise ValueError(f"the input must be one 3D volume (D, H, W) or (1, 1, D, H, W), got shape {tuple(y0.shape)}")
    if tuple(y.shape[2:]) != tuple(grid):
        raise ValueError(
            f"the input has shape {tuple(y.shape[2:])} but the model grid is {tuple(grid)}; "
            "resample it to the model grid first"
        )
    y = y.float()
    if not torch.isfinite(y).all():
        raise ValueError("the input contains NaN or infinite values")
    return y


def sampling_timesteps(schedule: Schedule, sampling: SamplingConfig) -> list[int]:
    """The descending timesteps a run visits: the grid of ``sampling.steps``, cut to its last ``start_strength``;
    with log-SNR spacing, as many steps from the same first timestep, evenly spaced in lambda."""
    grid = schedule.timesteps(sampling.steps)
    if sampling.start_strength < 1:
        keep = max(1, round(len(grid) * sampling.start_strength))
        grid = grid[-keep:]
    if sampling.spacing == "log-snr" and len(grid) > 1:
        grid = schedule.log_snr_timesteps(grid[0], len(grid))
    return grid


@dataclass
class _Run:
    """What a run fixes before its first step: the model's grid and schedule, the timesteps, the trajectories."""

    y: torch.Tensor  # the input batch on the model's device
    schedule: Schedule
    timesteps: list[int]
    pairs: list[tuple[int, int]]
    ws: tuple[float, ...]
    target: int
    source: int | None
    labels: list[int]  # the classes sampled: the target, then the source unless it is the target
    noise: Any  # the model's pyramid noise, or None for Gaussian

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.y.shape)

    def draw(self, generator: torch.Generator) -> torch.Tensor:
        return sample_noise(self.shape, generator, self.noise).to(self.y.device, self.y.dtype)


def _plan(model, y0, target, source, scales, sampling: SamplingConfig, seed) -> _Run:
    config = model.config
    target_index = config.class_index(target)
    source_index = None if source is None else config.class_index(source)
    ws = check_scales(scales)
    y = as_batch(y0, config.grid)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    parameter = next(model.parameters())
    schedule = Schedule(config.schedule)
    timesteps = sampling_timesteps(schedule, sampling)
    pairs = schedule.pairs(timesteps)
    injection = sampling.injection
    if injection is not None and not any(injection.active(i, len(pairs)) for i in range(len(pairs))):
        raise ValueError(f"the injection window {injection.window} holds none of the {len(pairs)} steps")
    labels = [target_index] + ([source_index] if source_index not in (None, target_index) else [])
    noise = config.noise if sampling.noise == "pyramid" else None
    y = y.to(parameter.device, parameter.dtype)
    return _Run(y, schedule, timesteps, pairs, ws, target_index, source_index, labels, noise)


def _start(run: _Run, sampling: SamplingConfig, generator, given: torch.Tensor | None, grid) -> tuple:
    """(x at the first timestep, the reference's noise). Both are drawn whatever the settings (and when a start is
    given), so that switching injection, the noise mode or the start never shifts the random stream."""
    start = run.draw(generator)
    reference_noise = run.draw(generator)
    if given is not None:
        if tuple(given.shape[-3:]) != tuple(grid):
            raise ValueError(f"the start has shape {tuple(given.shape)}, the model grid is {tuple(grid)}")
        start = given.reshape(run.shape).to(run.y.device, run.y.dtype)
    elif sampling.start_strength < 1:
        start = run.schedule.q_sample(run.y, run.timesteps[0], start)
    return start, reference_noise


def _blend(run: _Run, sampling: SamplingConfig, seed: int) -> list[Correction]:
    """Mask-guided blending as a correction; its noise from a generator of its own, so the loop's stream stays."""
    if sampling.blend is None:
        return []
    noise = run.draw(make_generator(seed + 104729))
    paired_with = run.source if run.source != run.target else None
    return [MaskBlend(sampling.blend, run.schedule, run.y, noise, run.target, paired_with)]


@torch.no_grad()
def counterfactual(
    model: ClassConditionalUNet,
    y0: torch.Tensor,
    target: str | int,
    scales: float | Sequence[float] = 3.0,
    sampling: SamplingConfig | None = None,
    *,
    seed: int = 0,
    on_step: StepCallback | None = None,
    should_stop: StopCallback | None = None,
    start: torch.Tensor | None = None,
    corrections: Sequence[Correction] = (),
    source: str | int | None = None,
) -> Counterfactuals:
    """Counterfactuals of ``y0`` (model grid, model intensity range) toward class ``target``, one per scale w.

    Raises :class:`~ControlCGLib.progress.Cancelled` when ``should_stop()`` returns True (checked before every step):
    nothing partial is returned.

    Two seams for the baselines (baselines.py), so that they run this very loop: ``start`` replaces the starting
    point (x at the first timestep, e.g. a DDIM-inverted input), and ``corrections`` change every new x_s after the
    solvers' step, before blending (e.g. ILVR's low-frequency replacement).

    ``source`` (a class): also run that class's trajectory per w, paired with the target's (module docstring); the
    result's ``source_images`` holds its ends and ``paired_change(w)`` the paired change.
    """
    sampling = sampling or SamplingConfig()
    run = _plan(model, y0, target, source, scales, sampling, seed)
    injection = sampling.injection
    generator = make_generator(seed)
    x_start, reference_noise = _start(run, sampling, generator, start, model.config.grid)
    xs = {(c, w): x_start.clone() for c in run.labels for w in run.ws}
    solvers = {key: make_solver(sampling, run.schedule) for key in xs}
    after = [*corrections, *_blend(run, sampling, seed)]
    guided = GuidedStep(model, run.labels, injection, sampling.precision, sampling.kv_stride)
    total = len(run.pairs)
    began = time.perf_counter()
    with guided:
        for i, (t, s) in enumerate(run.pairs):
            if should_stop is not None and should_stop():
                raise Cancelled(f"cancelled before step {i + 1} of {total}")
            inject = injection is not None and injection.active(i, total)
            if injection is not None and injection.reference_noise == "fresh":
                reference_noise = run.draw(generator)  # drawn outside the window too: the stream never shifts
            reference = run.schedule.q_sample(run.y, t, reference_noise) if inject else None
            step_noise = run.draw(generator) if sampling.stochastic else None
            clean = {}
            for key, v in guided(xs, t, reference).items():
                clean[key], eps = run.schedule.split_v(xs[key], v, t)
                xs[key] = solvers[key].step(xs[key], clean[key], eps, t=t, s=s, noise=step_noise)
            for correct in after:
                correct(xs, clean, index=i, total=total, s=s)
            if on_step is not None:
                x0s = {w: x0 for (c, w), x0 in clean.items() if c == run.target}
                on_step(StepInfo(i + 1, total, t, time.perf_counter() - began, x0s))
    return _result(model, run, xs, seed, sampling, time.perf_counter() - began)


def _result(model, run: _Run, xs, seed: int, sampling: SamplingConfig, seconds: float) -> Counterfactuals:
    names = model.config.class_names
    settings = {
        "target": names[run.target],
        "scales": list(run.ws),
        "source": None if run.source is None else names[run.source],
        "seed": seed,
        "timesteps": run.timesteps,
        "sampling": to_dict(sampling),
        "model": model.config.name,
    }
    ends = {key: x[0, 0].float().cpu() for key, x in xs.items()}
    images = {w: ends[run.target, w] for w in run.ws}
    paired = None if run.source is None else {w: ends.get((run.source, w), images[w]) for w in run.ws}
    return Counterfactuals(images, run.target, names[run.target], settings, seconds, paired)
