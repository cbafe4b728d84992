"""Noise schedule, timestep grids and the step maths (DDPM, DDIM, DPM-Solver++(2M), DDIM inversion) for v-prediction.

Stateless: every step takes its (t, s) pair by keyword; solvers.py wraps them as the sampling loop's solvers.

The schedule's betas come from MONAI's ``NoiseSchedules`` registry; everything after that is held in float64 and
owned here, because MONAI's ``DDPMScheduler.step`` always steps t -> t-1 (wrong with skipped steps) and
``DDIMScheduler.reversed_step`` fails on its last step.

Symbols (paper Eq. 1-2; Ho et al. 2020; Song et al. 2021 "DDIM"; Salimans & Ho 2022 for v):

=============  ==========================================
``a_t``        alpha-bar_t = prod_{i<=t} (1 - beta_i)
``x0``         predicted clean volume
``eps``        predicted noise
``v``          sqrt(a_t) * eps - sqrt(1 - a_t) * x0
``t -> s``     one step from timestep t to the earlier s (s = -1 means "clean", a_{-1} = 1)
=============  ==========================================
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from monai.networks.schedulers import NoiseSchedules

from ..model.config import ScheduleConfig

#: Timestep meaning "fully denoised": its alpha-bar is 1.
CLEAN = -1


class Schedule:
    """alpha-bar table of a trained model plus the conversions and steps that use it."""

    def __init__(self, config: ScheduleConfig | None = None):
        self.config = config or ScheduleConfig()
        c = self.config
        kwargs = {} if c.beta_schedule == "cosine" else {"beta_start": c.beta_start, "beta_end": c.beta_end}
        out = NoiseSchedules[c.beta_schedule](c.num_train_timesteps, **kwargs)
        betas = (out[0] if isinstance(out, tuple) else out).double()
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.num_train_timesteps = c.num_train_timesteps

    # --- alpha-bar lookup ------------------------------------------------------------------------------------------

    def alpha_bar(self, t: int) -> float:
        if t == CLEAN:
            return 1.0
        if not 0 <= t < self.num_train_timesteps:
            raise ValueError(f"timestep {t} outside [0, {self.num_train_timesteps - 1}]")
        return float(self.alphas_cumprod[t])

    def _alpha_bar_batch(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod.to(t.device)[t.long()]
        return a.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))

    # --- forward process and parameterisation conversions ----------------------------------------------------------

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
        """Eq. 2: x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, for a scalar t or one t per batch element."""
        if isinstance(t, numbers.Integral):
            a = self.alpha_bar(int(t))
            return math.sqrt(a) * x0 + math.sqrt(1.0 - a) * noise
        a = self._alpha_bar_batch(t, x0)
        return a.sqrt() * x0 + (1.0 - a).sqrt() * noise

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Training target for v-prediction."""
        a = self._alpha_bar_batch(t, x0)
        return a.sqrt() * noise - (1.0 - a).sqrt() * x0

    def split_v(self, x_t: torch.Tensor, v: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) implied by a v prediction at scalar timestep t."""
        a = self.alpha_bar(t)
        sa, sb = math.sqrt(a), math.sqrt(1.0 - a)
        return sa * x_t - sb * v, sb * x_t + sa * v

    # --- timestep grids --------------------------------------------------------------------------------------------

    def timesteps(self, num_steps: int) -> list[int]:
        """Descending grid from T-1 to 0 with ``num_steps`` entries, evenly spaced and rounded.

        ``num_steps == T`` gives the full chain T-1, ..., 0. Pinned by the tests: T=1000, 50 steps gives
        999, 979, 958, 938, ..., 20, 0.
        """
        T = self.num_train_timesteps
        if not 1 <= num_steps <= T:
            raise ValueError(
                f"the number of sampling steps must be in [1, {T}] (the model's training timesteps), got {num_steps}"
            )
        if num_steps == 1:
            return [T - 1]
        return [int(t) for t in np.rint(np.linspace(T - 1, 0, num_steps))]

    def log_snr_timesteps(self, first: int, num_steps: int) -> list[int]:
        """Descending grid from ``first`` to 0 whose entries are evenly spaced in lambda (half the log SNR), each
        the nearest integer timestep; repeats are dropped, so a long grid may come out shorter.

        What a multistep solver wants (Lu et al. 2022, "logSNR" spacing): even time steps leave its last interval
        (t = 111 -> 0 on a 10-step grid) several times longer in lambda than the one before, where the
        second-order extrapolation overshoots.
        """
        if not 1 <= num_steps <= first + 1:
            raise ValueError(f"a log-SNR grid from timestep {first} has 1 to {first + 1} steps, got {num_steps}")
        lam = 0.5 * torch.log(self.alphas_cumprod / (1 - self.alphas_cumprod))  # increasing as t falls
        targets = torch.linspace(float(lam[first]), float(lam[0]), num_steps, dtype=lam.dtype)
        nearest = (lam[None, : first + 1] - targets[:, None]).abs().argmin(dim=1).tolist()
        return sorted(set(nearest), reverse=True)

    @staticmethod
    def pairs(timesteps: list[int]) -> list[tuple[int, int]]:
        """(t, s) step pairs of a descending grid, the last stepping to :data:`CLEAN`."""
        return list(zip(timesteps, timesteps[1:] + [CLEAN]))

    # --- reverse steps ---------------------------------------------------------------------------------------------

    def ddim_step(
        self,
        x0: torch.Tensor,
        eps: torch.Tensor,
        *,
        t: int,
        s: int,
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """DDIM (Song et al. 2021, Eq. 12) from t to s < t; deterministic at ``eta = 0``."""
        a_t, a_s = self.alpha_bar(t), self.alpha_bar(s)
        sigma = 0.0
        if eta > 0:
            sigma = eta * math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        direction = math.sqrt(max(1 - a_s - sigma**2, 0.0))
        out = math.sqrt(a_s) * x0 + direction * eps
        if sigma > 0:
            if noise is None:
                raise ValueError("a stochastic DDIM step (eta > 0) needs noise")
            out = out + sigma * noise
        return out

    def log_snr_half(self, t: int) -> float:
        """lambda_t = log(sqrt(a_t) / sqrt(1 - a_t)), DPM-Solver's time variable (infinite at CLEAN)."""
        a = self.alpha_bar(t)
        return math.inf if a >= 1.0 else 0.5 * math.log(a / (1.0 - a))

    def dpm_solver_2m_step(
        self,
        x_t: torch.Tensor,
        x0: torch.Tensor,
        *,
        t: int,
        s: int,
        previous: tuple[torch.Tensor, int] | None = None,
    ) -> torch.Tensor:
        """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) from t to s < t, the data-prediction form.

        ``previous`` = (x0 predicted at the step before, its timestep): the second-order correction extrapolates the
        clean prediction along lambda. Without it (the first step), and on the steps into timestep 0 and to
        :data:`CLEAN`, it is the first-order step, exactly DDIM at eta = 0: the interval into 0 is the longest in
        lambda, where extrapolating overshoots (diffusers' ``lower_order_final`` makes the same choice).
        """
        if s == CLEAN:
            return x0
        if s == 0:
            previous = None
        a_t, a_s = self.alpha_bar(t), self.alpha_bar(s)
        lam_t, lam_s = self.log_snr_half(t), self.log_snr_half(s)
        h = lam_s - lam_t
        d = x0
        if previous is not None:
            x0_prev, t_prev = previous
            r = (lam_t - self.log_snr_half(t_prev)) / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        return math.sqrt((1 - a_s) / (1 - a_t)) * x_t + math.sqrt(a_s) * (-math.expm1(-h)) * d

    def ddpm_step(self, x_t: torch.Tensor, x0: torch.Tensor, *, t: int, s: int, noise: torch.Tensor) -> torch.Tensor:
        """Ancestral step from t to any s < t: a draw from the true posterior q(x_s | x_t, x0).

        With beta_ts = 1 - a_t / a_s this is Ho et al.'s posterior for the respaced chain (Nichol & Dhariwal 2021),
        so skipped steps keep the right marginals; s = t - 1 gives the classic DDPM step.
        """
        a_t, a_s = self.alpha_bar(t), self.alpha_bar(s)
        beta_ts = 1 - a_t / a_s
        coef_x0 = math.sqrt(a_s) * beta_ts / (1 - a_t)
        coef_xt = math.sqrt(1 - beta_ts) * (1 - a_s) / (1 - a_t)
        mean = coef_x0 * x0 + coef_xt * x_t
        var = (1 - a_s) / (1 - a_t) * beta_ts
        if var <= 0:
            return mean
        return mean + math.sqrt(var) * noise

    def ddim_reverse_step(self, x0: torch.Tensor, eps: torch.Tensor, *, s: int, t: int) -> torch.Tensor:
        """DDIM inversion: from s to a later t > s along the deterministic path.

        ``x0`` and ``eps`` come from the model evaluated at s; from s = CLEAN (no timestep to evaluate at) callers
        evaluate the model at the first grid timestep instead.
        """
        a_t = self.alpha_bar(t)
        return math.sqrt(a_t) * x0 + math.sqrt(1 - a_t) * eps
