"""The guided sampler: one loop that makes counterfactuals for the command line, Slicer and the evaluation.

Per step t -> s (paper Eqs. 2, 4, 5, 9):

1. the reference y0 is noised to y_t by Eq. 2 (inside the injection window);
2. the model function (guided_step.py) returns one guided v per w: a reference pass on y_t shared by every w, then
   conditional and unconditional passes injecting its attention tokens (Eq. 8), combined by Eq. 5. The sampler
   knows nothing of the UNet, the injection, autocast or the guidance formula;
3. DDIM (or the strided DDPM posterior, or DPM-Solver++(2M), which also uses the step before's clean prediction)
   moves x_t to x_s.

All noise comes from one CPU generator seeded by ``seed``, drawn in an order that does not depend on the number of w
values, so that a sweep equals separate runs and a seed reproduces its output bit for bit.

*Paired* runs (``source`` given, our departure from the paper, issue 16): the source class's trajectory runs beside
the target's from the same start with the same noise and the same reference pass; the difference of the two ends is
the change that the class alone makes (what both share -- the model redrawing anatomy it does not know -- cancels).
A source equal to the target is not sampled twice: its change is exactly zero.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable, Sequence
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

    def change(self, w: float) -> torch.Tensor:
        """The paired change at ``w`` (target end minus source end); needs a paired run."""
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
    after_step: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    source: str | int | None = None,
) -> Counterfactuals:
    """Counterfactuals of ``y0`` (model grid, model intensity range) toward class ``target``, one per scale w.

    Raises :class:`~ControlCGLib.progress.Cancelled` when ``should_stop()`` returns True (checked before every step):
    nothing partial is returned.

    Two seams for the baselines (baselines.py), so that they run this very loop: ``start`` replaces the starting
    point (x at the first timestep, e.g. a DDIM-inverted input), and ``after_step(x_s, s)`` may correct every new
    x_s (e.g. ILVR's low-frequency replacement).

    ``source`` (a class): also run that class's trajectory per w, paired with the target's (module docstring); the
    result's ``source_images`` holds its ends and ``change(w)`` the paired change.
    """
    sampling = sampling or SamplingConfig()
    config = model.config
    target_index = config.class_index(target)
    source_index = None if source is None else config.class_index(source)
    ws = check_scales(scales)
    y = as_batch(y0, config.grid)

    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    schedule = Schedule(config.schedule)
    timesteps = sampling_timesteps(schedule, sampling)
    pairs = schedule.pairs(timesteps)
    noise_cfg = config.noise if sampling.noise == "pyramid" else None
    injection = sampling.injection
    shape = tuple(y.shape)

    if injection is not None and not any(injection.active(i, len(pairs)) for i in range(len(pairs))):
        raise ValueError(f"the injection window {injection.window} holds none of the {len(pairs)} steps")

    generator = make_generator(seed)
    # Drawn whatever the settings (and when a start is given), so that switching injection, the noise mode or the
    # start never shifts the random stream.
    given_start = start
    start = sample_noise(shape, generator, noise_cfg).to(device, dtype)
    reference_noise = sample_noise(shape, generator, noise_cfg).to(device, dtype)
    y = y.to(device, dtype)
    if given_start is not None:
        if tuple(given_start.shape[-3:]) != tuple(config.grid):
            raise ValueError(f"the start has shape {tuple(given_start.shape)}, the model grid is {tuple(config.grid)}")
        start = given_start.reshape(shape).to(device, dtype)
    elif sampling.start_strength < 1:
        start = schedule.q_sample(y, timesteps[0], start)
    labels = [target_index] + ([source_index] if source_index not in (None, target_index) else [])
    xs = {(c, w): start.clone() for c in labels for w in ws}

    guided = GuidedStep(model, labels, injection, sampling.precision, sampling.kv_stride)
    blend = None
    if sampling.blend is not None:  # its noise from a generator of its own: the loop's stream stays as it was
        blend_noise = sample_noise(shape, make_generator(seed + 104729), noise_cfg).to(device, dtype)
        paired_with = source_index if source_index != target_index else None
        blend = MaskBlend(sampling.blend, schedule, y, blend_noise, target_index, paired_with)

    history: dict = {}  # DPM-Solver++(2M): per trajectory, the clean prediction of the step before and its timestep
    began = time.perf_counter()
    with guided:
        for i, (t, s) in enumerate(pairs):
            if should_stop is not None and should_stop():
                raise Cancelled(f"cancelled before step {i + 1} of {len(pairs)}")
            inject = injection is not None and injection.active(i, len(pairs))
            if injection is not None and injection.reference_noise == "fresh":
                # Drawn even outside the window so that the window never shifts the random stream.
                reference_noise = sample_noise(shape, generator, noise_cfg).to(device, dtype)
            reference = schedule.q_sample(y, t, reference_noise) if inject else None
            step_noise = sample_noise(shape, generator, noise_cfg).to(device, dtype) if sampling.stochastic else None
            x0s, clean = {}, {}
            for key, v in guided(xs, t, reference).items():
                x0, eps = schedule.split_v(xs[key], v, t)
                if sampling.method == "ddpm":
                    xs[key] = schedule.ddpm_step(xs[key], x0, t, s, step_noise)
                elif sampling.method == "dpm++2m":
                    xs[key] = schedule.dpm_solver_2m_step(xs[key], x0, t, s, history.get(key))
                    history[key] = (x0, t)
                else:
                    xs[key] = schedule.ddim_step(x0, eps, t, s, sampling.eta, step_noise)
                if after_step is not None:
                    xs[key] = after_step(xs[key], s)
                clean[key] = x0
                if key[0] == target_index:
                    x0s[key[1]] = x0
            if blend is not None:
                blend(xs, clean, i, len(pairs), s)
            if on_step is not None:
                on_step(StepInfo(i + 1, len(pairs), t, time.perf_counter() - began, x0s))
    seconds = time.perf_counter() - began
    settings = {
        "target": config.class_names[target_index],
        "scales": list(ws),
        "source": None if source_index is None else config.class_names[source_index],
        "seed": seed,
        "timesteps": timesteps,
        "sampling": to_dict(sampling),
        "model": config.name,
    }
    ends = {key: x[0, 0].float().cpu() for key, x in xs.items()}
    images = {w: ends[target_index, w] for w in ws}
    paired = None if source_index is None else {w: ends.get((source_index, w), images[w]) for w in ws}
    return Counterfactuals(images, target_index, config.class_names[target_index], settings, seconds, paired)
