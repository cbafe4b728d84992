import pytest
import torch

from ControlCGLib.defaults import W
from ControlCGLib.sampling.guidance import cfg_combine, check_scales
from ControlCGLib.sampling.noise import coarse_power_fraction, make_generator, pyramid_noise


def test_cfg_matches_hand_computation():
    cond = torch.tensor([2.0, -1.0])
    uncond = torch.tensor([0.5, 1.0])
    # (1 + w) * cond - w * uncond with w = 3: 4 * 2 - 3 * 0.5 = 6.5 ; 4 * -1 - 3 * 1 = -7
    assert torch.equal(cfg_combine(cond, uncond, 3.0), torch.tensor([6.5, -7.0]))
    assert cfg_combine(cond, uncond, 0.0) is cond
    assert cfg_combine(cond, None, 0.0) is cond
    with pytest.raises(ValueError, match="unconditional"):
        cfg_combine(cond, None, 1.0)


def test_check_scales():
    assert check_scales(2) == (2.0,)
    assert check_scales([0, 1.5]) == (0.0, 1.5)
    for bad in ([], [-1.0], [float("nan")], [1.0, 1.0], [float("inf")]):
        with pytest.raises(ValueError):
            check_scales(bad)
    # one range of w for the library, the CLI and the Slicer slider (ControlCGLib/defaults.py)
    assert check_scales(W.high) == (W.high,)
    with pytest.raises(ValueError, match=r"guidance scale w must lie in \[0, 10\], got 10.5"):
        check_scales([2.0, 10.5])


def test_pyramid_noise_has_unit_variance_per_sample():
    n = pyramid_noise((4, 1, 16, 16, 16), make_generator(0), discount=0.8, levels=3)
    stds = n.flatten(1).std(dim=1)
    assert torch.allclose(stds, torch.ones(4), atol=1e-5)
    assert abs(float(n.mean())) < 0.2


def test_pyramid_noise_is_seeded():
    a = pyramid_noise((1, 1, 8, 8, 8), make_generator(3))
    b = pyramid_noise((1, 1, 8, 8, 8), make_generator(3))
    assert torch.equal(a, b)


def test_pyramid_without_discount_is_white_noise():
    a = pyramid_noise((1, 1, 8, 8, 8), make_generator(3), discount=0.0)
    b = torch.randn((1, 1, 8, 8, 8), generator=make_generator(3))
    assert torch.equal(a, b)


def test_pyramid_spectrum():
    """White noise keeps 1/f**3 of its variance after f-fold block averaging; pyramid noise keeps far more, and more
    with a larger discount. The figures are the documented ones for 32**3 (mean of 8 draws)."""
    shape = (8, 1, 32, 32, 32)
    white = coarse_power_fraction(torch.randn(shape, generator=make_generator(0)), 4)
    assert white == pytest.approx(1 / 64, rel=0.15)
    weak = coarse_power_fraction(pyramid_noise(shape, make_generator(0), discount=0.5, levels=3), 4)
    strong = coarse_power_fraction(pyramid_noise(shape, make_generator(0), discount=0.8, levels=3), 4)
    assert 0.03 < weak < strong
    assert weak == pytest.approx(0.050, abs=0.01)
    assert strong == pytest.approx(0.18, abs=0.03)


def test_check_scales_refuses_strings_and_bools_and_accepts_scalars():
    import numpy as np

    for bad in ("12", True, [1.0, "2"]):
        with pytest.raises(ValueError, match="number"):
            check_scales(bad)
    assert check_scales(np.float64(2.5)) == (2.5,)
    assert check_scales(torch.tensor(3.0)) == (3.0,)
    assert check_scales(torch.tensor([1.0, 2.0])) == (1.0, 2.0)
