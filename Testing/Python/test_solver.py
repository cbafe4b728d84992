"""DPM-Solver++(2M) and the log-SNR grid: the same counterfactual in fewer UNet passes."""

from __future__ import annotations

import math

import pytest
import torch

from ControlCGLib.model.config import ConfigError
from ControlCGLib.sampling.sampler import counterfactual, sampling_timesteps
from ControlCGLib.sampling.schedule import CLEAN, Schedule
from ControlCGLib.sampling.settings import BlendConfig, SamplingConfig


def _ode_error(schedule: Schedule, sampling: SamplingConfig, variance: float = 0.25) -> float:
    """Largest error at the clean end for data ~ N(0, variance): the exact clean prediction is known in closed
    form, and along the probability-flow ODE x_t / sqrt(a_t variance + 1 - a_t) is constant."""
    x_start = torch.randn(2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    timesteps = sampling_timesteps(schedule, sampling)
    a = schedule.alpha_bar(timesteps[0])
    x, previous = x_start * math.sqrt(a * variance + 1 - a), None
    for t, s in schedule.pairs(timesteps):
        a = schedule.alpha_bar(t)
        x0 = math.sqrt(a) * variance / (a * variance + 1 - a) * x
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
        if sampling.solver == "dpm++2m":
            x, previous = schedule.dpm_solver_2m_step(x, x0, t=t, s=s, previous=previous), (x0, t)
        else:
            x = schedule.ddim_step(x0, eps, t=t, s=s)
    return float((x - x_start * math.sqrt(variance)).abs().max())


def test_the_first_order_step_is_ddim():
    schedule = Schedule()
    x_t, x0 = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    a = schedule.alpha_bar(400)
    eps = (x_t - math.sqrt(a) * x0) / math.sqrt(1 - a)
    for s in (300, 0, CLEAN):
        ddim = schedule.ddim_step(x0, eps, t=400, s=s)
        assert torch.allclose(schedule.dpm_solver_2m_step(x_t, x0, t=400, s=s), ddim, atol=1e-12)
    # into timestep 0 the step is first order even with a history (the longest interval in lambda)
    history = (torch.randn(50, dtype=torch.float64), 500)
    assert torch.allclose(
        schedule.dpm_solver_2m_step(x_t, x0, t=400, s=0, previous=history), schedule.ddim_step(x0, eps, t=400, s=0)
    )


def test_the_second_order_solver_needs_fewer_steps_on_a_known_ode():
    schedule = Schedule()
    product = SamplingConfig(steps=50, start_strength=0.3)  # 15 DDIM steps, the product's grid
    ddim = _ode_error(schedule, product)
    fewer = SamplingConfig(steps=20, start_strength=0.3, solver="dpm++2m", spacing="log-snr")  # 6 steps
    assert len(sampling_timesteps(schedule, fewer)) == 6
    assert _ode_error(schedule, fewer) < 0.7 * ddim
    # second order: from 15 to 49 steps DDIM's error falls ~3x, the solver's far more
    assert _ode_error(schedule, SamplingConfig(steps=50, solver="dpm++2m")) < 0.1 * _ode_error(
        schedule, SamplingConfig(steps=50)
    )


def test_log_snr_grid_runs_from_the_same_start_to_zero_without_repeats():
    schedule = Schedule()
    grid = sampling_timesteps(schedule, SamplingConfig(steps=50, start_strength=0.3, spacing="log-snr"))
    time_grid = sampling_timesteps(schedule, SamplingConfig(steps=50, start_strength=0.3))
    assert grid[0] == time_grid[0] and grid[-1] == 0 and len(grid) == len(time_grid)
    assert grid == sorted(set(grid), reverse=True)
    lam = [schedule.log_snr_half(t) for t in grid]
    gaps = [b - a for a, b in zip(lam, lam[1:])]
    assert max(gaps[:-3]) < 1.5 * min(gaps[:-3])  # even in lambda (the last few are rounded to whole timesteps)
    assert schedule.log_snr_timesteps(3, 4) == [3, 2, 1, 0]
    with pytest.raises(ValueError, match="log-SNR grid from timestep 3"):
        schedule.log_snr_timesteps(3, 5)


def test_the_solver_runs_the_one_loop_paired_blended_and_repeatable(monkeypatch, tiny_model, tiny_input):
    sampling = SamplingConfig(steps=6, solver="dpm++2m", spacing="log-snr", injection=None, blend=BlendConfig())
    from conftest import count_unet_calls

    calls = count_unet_calls(monkeypatch, tiny_model)
    one = counterfactual(tiny_model, tiny_input, "AD", (0.0, 2.0), sampling, seed=5, source="CN")
    steps = len(sampling_timesteps(Schedule(tiny_model.config.schedule), sampling))
    # per step and class: w = 0 one pass, w = 2 two; at the first step all four trajectories start from one x_t, so
    # it takes one conditional pass per class and one unconditional pass
    assert len(calls) == steps * 2 * (1 + 2) - 3
    again = counterfactual(tiny_model, tiny_input, "AD", (0.0, 2.0), sampling, seed=5, source="CN")
    assert torch.equal(one[2.0], again[2.0]) and torch.equal(one.paired_change(2.0), again.paired_change(2.0))
    ddim = counterfactual(tiny_model, tiny_input, "AD", 2.0, SamplingConfig(steps=6, injection=None), seed=5)
    assert not torch.equal(one[2.0], ddim[2.0])
    assert one.settings["sampling"]["solver"] == "dpm++2m" and one.settings["sampling"]["spacing"] == "log-snr"


def test_bad_solver_settings_are_named():
    with pytest.raises(ConfigError, match="eta applies to DDIM only; dpm\\+\\+2m steps are deterministic"):
        SamplingConfig(solver="dpm++2m", eta=0.5)
    with pytest.raises(ConfigError, match="sampling.spacing must be one of"):
        SamplingConfig(spacing="karras")
    with pytest.raises(ConfigError, match="sampling.solver must be one of"):
        SamplingConfig(solver="unipc")
