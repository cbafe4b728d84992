import numpy as np
import pytest

from ControlCGLib.imaging.intensity import from_model_range, normalize, to_model_range
from ControlCGLib.model.config import IntensityConfig


def test_normalize_uses_the_percentile_and_clips():
    rng = np.random.default_rng(0)
    v = np.zeros((20, 20, 20), np.float32)
    v[5:15, 5:15, 5:15] = rng.uniform(10, 110, size=(10, 10, 10))
    out = normalize(v)
    inside = v[5:15, 5:15, 5:15]
    p = np.percentile(inside, 99.5)
    lo = inside.min()
    assert out.min() == 0 and out.max() == 1
    assert np.allclose(out[5:15, 5:15, 5:15], np.clip((inside - lo) / (p - lo), 0, 1), atol=1e-6)
    assert (out[5:15, 5:15, 5:15] == 1).mean() == pytest.approx(0.005, abs=0.002)


def test_normalize_refuses_bad_images():
    with pytest.raises(ValueError, match="NaN"):
        normalize(np.full((4, 4, 4), np.nan))
    with pytest.raises(ValueError, match="empty"):
        normalize(np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="constant"):
        normalize(np.full((4, 4, 4), 3.0))


def test_model_range_round_trip():
    x = np.linspace(0, 1, 11)
    cfg = IntensityConfig(model_range=(-1.0, 1.0))
    assert np.allclose(to_model_range(x, cfg)[[0, -1]], [-1, 1])
    assert np.allclose(from_model_range(to_model_range(x, cfg), cfg), x)
