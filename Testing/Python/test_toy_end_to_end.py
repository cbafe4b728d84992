"""End-to-end learning test: train the toy model on the CPU (about a minute), then check what its counterfactuals do.

The toy (ControlCGLib.data.toy): class 0 ("small") holds a small soft ball, class 1 ("large") a large one, each with its
own centre and brightness. Counterfactuals of small inputs toward "large" must grow the ball, more so at larger w.
"""

from __future__ import annotations

import pytest
import torch

from ControlCGLib.data.toy import RADII, ball_volume, toy_batch
from ControlCGLib.sampling.noise import make_generator
from ControlCGLib.sampling.sampler import counterfactual
from ControlCGLib.sampling.settings import SamplingConfig

N_SUBJECTS = 4
SCALES = (0.0, 1.0, 3.0)


@pytest.fixture(scope="module")
def small_inputs():
    x, _, _ = toy_batch(N_SUBJECTS, make_generator(123), labels=torch.zeros(N_SUBJECTS, dtype=torch.long))
    return x[:, 0]


def _run(model, inputs, sampling):
    return [counterfactual(model, inputs[i], "large", SCALES, sampling, seed=i) for i in range(len(inputs))]


@pytest.fixture(scope="module")
def results(toy_model, small_inputs):
    return {
        "injection": _run(toy_model, small_inputs, SamplingConfig(steps=20)),
        "plain": _run(toy_model, small_inputs, SamplingConfig(steps=20, injection=None)),
    }


def test_training_learnt_the_classes(toy_model, small_inputs):
    """Conditional samples of each class have the class's ball size (the model learnt the class condition)."""
    sampling = SamplingConfig(steps=20, injection=None)
    sizes = {}
    for label in ("small", "large"):
        out = [counterfactual(toy_model, small_inputs[i], label, 0.0, sampling, seed=i)[0.0] for i in range(N_SUBJECTS)]
        sizes[label] = float(torch.stack([ball_volume(o) for o in out]).mean())
    expected_small = 4 / 3 * torch.pi * RADII[0] ** 3
    expected_large = 4 / 3 * torch.pi * RADII[1] ** 3
    assert sizes["small"] < (expected_small + expected_large) / 2 < sizes["large"]


def test_counterfactual_grows_the_ball_more_at_larger_w(results, small_inputs):
    input_volume = float(ball_volume(small_inputs).mean())
    volumes = [float(torch.stack([ball_volume(r[w]) for r in results["injection"]]).mean()) for w in SCALES]
    assert volumes[0] > 2 * input_volume  # toward the target class at all
    assert volumes[0] < volumes[1] < volumes[2]  # and more so as w grows


def _mean_mse(runs, inputs, w):
    return float(torch.stack([((r[w] - inputs[i]) ** 2).mean() for i, r in enumerate(runs)]).mean())


@pytest.mark.xfail(
    strict=True,
    reason="measured: at toy scale the learnt self-attention is nearly independent of its keys/values, so Eq. 8 "
    "injection changes the counterfactual by <1% (docs/method/README.md, 'Attention injection, measured'); "
    "kept strict so a fix is noticed",
)
def test_injection_keeps_the_counterfactual_closer_to_its_input(results, small_inputs):
    for w in SCALES:
        with_injection = _mean_mse(results["injection"], small_inputs, w)
        without = _mean_mse(results["plain"], small_inputs, w)
        assert with_injection < 0.9 * without
