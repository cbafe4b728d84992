"""The step of the sampling loop: solvers, and the corrections that run after each step.

A solver moves one trajectory from timestep t to the earlier s given the model's clean and noise predictions, with
one signature for every kind (diffusers' scheduler shape over our stateless schedule: the (t, s) pair is explicit
and keyword-only). A solver that remembers earlier steps (DPM-Solver++(2M)) keeps that memory itself, so the loop
makes one solver per trajectory and never asks which kind it holds.

A correction changes the trajectories after the solvers have stepped them all: ILVR's low-frequency replacement
(baselines.py) and mask-guided blending (blending.py).
"""

from __future__ import annotations

from typing import Protocol

import torch

from .schedule import Schedule
from .settings import SamplingConfig

Trajectory = tuple[int, float]  # (class index, w)
States = dict[Trajectory, torch.Tensor]  # one volume per trajectory


class Solver(Protocol):
    def step(
        self, x_t: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, *, t: int, s: int, noise: torch.Tensor | None
    ) -> torch.Tensor:
        """x_s from x_t and the predictions at t; ``noise``: the step's noise (None for a deterministic solver)."""


class Correction(Protocol):
    def __call__(self, xs: States, clean: States, *, index: int, total: int, s: int) -> None:
        """Change ``xs`` (just stepped to timestep ``s``, step ``index`` of ``total``; ``clean`` the clean predictions
        of this step) in place."""


class DDIM:
    """Song et al. 2021, Eq. 12; deterministic at ``eta`` 0."""

    def __init__(self, schedule: Schedule, eta: float = 0.0):
        self.schedule, self.eta = schedule, eta

    def step(self, x_t, x0, eps, *, t, s, noise):
        return self.schedule.ddim_step(x0, eps, t=t, s=s, eta=self.eta, noise=noise)


class DDPM:
    """The strided ancestral step: a draw from the true posterior q(x_s | x_t, x0)."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def step(self, x_t, x0, eps, *, t, s, noise):
        return self.schedule.ddpm_step(x_t, x0, t=t, s=s, noise=noise)


class DPMSolver2M:
    """DPM-Solver++(2M) (Lu et al. 2022): second order from the clean prediction of the step before, kept here."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule
        self.previous: tuple[torch.Tensor, int] | None = None

    def step(self, x_t, x0, eps, *, t, s, noise):
        x_s = self.schedule.dpm_solver_2m_step(x_t, x0, t=t, s=s, previous=self.previous)
        self.previous = (x0, t)
        return x_s


def make_solver(sampling: SamplingConfig, schedule: Schedule) -> Solver:
    """A fresh solver (with no memory) of the kind ``sampling.solver`` names, for one trajectory."""
    if sampling.solver == "ddpm":
        return DDPM(schedule)
    if sampling.solver == "dpm++2m":
        return DPMSolver2M(schedule)
    return DDIM(schedule, sampling.eta)
