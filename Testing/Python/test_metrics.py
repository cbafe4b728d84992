import numpy as np
import pytest

from ControlCGLib.evaluation.metrics import mse, saliency_auroc, ssim


def test_ssim_is_one_for_equal_volumes_and_drops_with_noise():
    rng = np.random.default_rng(0)
    a = rng.random((20, 24, 20)).astype(np.float32)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-5)
    noisy = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    assert ssim(a, noisy) < 0.9
    assert mse(a, a) == 0 and mse(a, noisy) > 0.01


def test_saliency_auroc_ranks_true_changes():
    mask = np.ones((10, 12, 10), bool)
    truth = np.zeros(mask.shape, np.float32)
    truth[3:6, 4:8, 3:6] = 0.2
    assert saliency_auroc(truth, truth, mask) == pytest.approx(1.0)
    assert saliency_auroc(-truth, truth, mask) == pytest.approx(1.0)  # the sign of the change does not matter
    assert saliency_auroc(np.ones(mask.shape), truth, mask) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="changed and unchanged"):
        saliency_auroc(truth, np.zeros(mask.shape), mask)
