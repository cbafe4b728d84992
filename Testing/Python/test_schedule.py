import math

import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from ControlCGLib.model.config import ScheduleConfig
from ControlCGLib.sampling.schedule import CLEAN, Schedule


def test_timesteps_are_pinned():
    s = Schedule(ScheduleConfig(num_train_timesteps=1000))
    ts = s.timesteps(50)
    assert len(ts) == 50
    assert ts[:6] == [999, 979, 958, 938, 917, 897]
    assert ts[-4:] == [61, 41, 20, 0]
    assert s.timesteps(1000) == list(range(999, -1, -1))
    assert s.pairs([999, 500, 0]) == [(999, 500), (500, 0), (0, CLEAN)]
    with pytest.raises(ValueError, match="steps"):
        s.timesteps(0)


def test_alpha_bar_matches_monai():
    ours = Schedule(ScheduleConfig(num_train_timesteps=1000, beta_schedule="linear_beta"))
    monai = DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta", beta_start=1e-4, beta_end=2e-2)
    assert torch.allclose(ours.alphas_cumprod.float(), monai.alphas_cumprod, atol=1e-6)
    assert ours.alpha_bar(CLEAN) == 1.0


def test_v_parameterisation_round_trip():
    s = Schedule()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 1, 4, 4, 4, generator=g), torch.randn(2, 1, 4, 4, 4, generator=g)
    t = 600
    x_t = s.q_sample(x0, t, eps)
    v = s.velocity(x0, eps, torch.tensor([t, t]))
    x0_hat, eps_hat = s.split_v(x_t, v, t)
    assert torch.allclose(x0_hat, x0, atol=1e-5) and torch.allclose(eps_hat, eps, atol=1e-5)
    assert torch.allclose(s.q_sample(x0, torch.tensor([t, t]), eps), x_t, atol=1e-6)


def test_ddim_with_oracle_follows_the_forward_path_and_inverts():
    s = Schedule()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(1, 1, 4, 4, 4, generator=g), torch.randn(1, 1, 4, 4, 4, generator=g)
    x_t = s.q_sample(x0, 700, eps)
    x_s = s.ddim_step(x0, eps, t=700, s=300)
    assert torch.allclose(x_s, s.q_sample(x0, 300, eps), atol=1e-6)
    assert torch.allclose(s.ddim_reverse_step(x0, eps, s=300, t=700), x_t, atol=1e-6)
    assert torch.allclose(s.ddim_step(x0, eps, t=0, s=CLEAN), x0, atol=1e-6)


def test_ddpm_single_step_is_the_classic_posterior():
    s = Schedule()
    g = torch.Generator().manual_seed(0)
    x0, eps, z = (torch.randn(1, 1, 4, 4, 4, generator=g) for _ in range(3))
    t = 400
    x_t = s.q_sample(x0, t, eps)
    beta, a_t, a_prev = float(s.betas[t]), s.alpha_bar(t), s.alpha_bar(t - 1)
    mean = (x_t - beta / math.sqrt(1 - a_t) * eps) / math.sqrt(1 - beta)
    var = beta * (1 - a_prev) / (1 - a_t)
    assert torch.allclose(s.ddpm_step(x_t, x0, t=t, s=t - 1, noise=z), mean + math.sqrt(var) * z, atol=1e-5)


@pytest.mark.parametrize("t, s_", [(999, 979), (600, 300), (50, 0), (20, CLEAN)])
def test_strided_ddpm_keeps_the_marginals(t, s_):
    """With the true x0, a strided step from x_t ~ q(x_t | x0) must land on q(x_s | x0): mean sqrt(a_s) x0 and
    variance 1 - a_s. MONAI's DDPM step (always t -> t-1) fails this with skipped steps."""
    sched = Schedule()
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.full((n,), 0.7, dtype=torch.float64)
    x_t = sched.q_sample(x0, t, torch.randn(n, generator=g, dtype=torch.float64))
    x_s = sched.ddpm_step(x_t, x0, t=t, s=s_, noise=torch.randn(n, generator=g, dtype=torch.float64))
    a_s = sched.alpha_bar(s_)
    assert float(x_s.mean()) == pytest.approx(math.sqrt(a_s) * 0.7, abs=5e-3)
    assert float(x_s.var()) == pytest.approx(1 - a_s, abs=5e-3)
