"""The memory estimate: the traced (fake) passes equal the real passes byte for byte; a run that cannot fit is refused
with its estimate before the image is even read."""

import dataclasses

import pytest
import torch

from ControlCGLib.cli import main
from ControlCGLib.model.config import ModelConfig, UNetConfig
from ControlCGLib.model.networks import ClassConditionalUNet
from ControlCGLib.sampling import memory
from ControlCGLib.sampling.settings import InjectionConfig

TINY = ModelConfig(
    name="tiny",
    grid=(16, 16, 16),
    unet=UNetConfig(channels=(8, 16), attention_levels=(False, True), norm_num_groups=4, num_head_channels=8),
    context_dim=16,
)
INJECTION = InjectionConfig()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("injection", [INJECTION, None])
def test_traced_passes_equal_the_real_ones(precision, injection):
    torch.manual_seed(0)
    real = memory.step_passes(ClassConditionalUNet(TINY), injection, precision, torch.device("cpu"))
    traced = memory.estimate(TINY, 1, precision, injection).passes
    assert traced == real > 0


def test_the_estimate_traces_the_samplers_own_model_function(monkeypatch, tiny_model, tiny_input):
    """One guided step serves the sampler and the memory trace: no second copy of the step to drift apart."""
    from ControlCGLib.sampling.guided_step import GuidedStep
    from ControlCGLib.sampling.sampler import counterfactual
    from ControlCGLib.sampling.settings import SamplingConfig

    calls = []
    original = GuidedStep.__call__

    def logged(self, xs, t, reference=None):
        calls.append((len(xs), reference is not None, self.precision))
        return original(self, xs, t, reference)

    monkeypatch.setattr(GuidedStep, "__call__", logged)
    memory.estimate(TINY, 3, "bf16", INJECTION)
    assert calls == [(1, True, "bf16")]  # a w != 0 with the reference pass: the step's worst case
    calls.clear()
    counterfactual(tiny_model, tiny_input, "AD", (0.0, 2.0), SamplingConfig(steps=3), seed=0)
    assert calls == [(2, True, "fp32")] * 3


def test_the_estimate_grows_with_the_grid_and_the_number_of_w():
    one = memory.estimate(TINY, 1)
    assert memory.estimate(TINY, 5).volumes - one.volumes == 8 * 4 * 16**3  # x_t and x_0 for 4 more w
    bigger = memory.estimate(dataclasses.replace(TINY, grid=(32, 32, 32)), 1)
    assert bigger.passes > 6 * one.passes and bigger.weights == one.weights
    assert memory.estimate(TINY, 1, "bf16").passes < one.passes


def test_a_run_that_does_not_fit_is_refused_with_its_estimate():
    est = memory.estimate(TINY, 2)
    memory.check_fits(est, free=10 * est.total)  # fits: no error
    with pytest.raises(ValueError, match=r"would need about \d+ MB \(weights \d+ MB, .*only \d+ MB are free on cpu"):
        memory.check_fits(est, free=est.total)
    assert memory.available() > 0


def test_the_command_refuses_before_reading_the_image(tmp_path, capsys, monkeypatch):
    import ControlCGLib.imaging.reading as reading

    monkeypatch.setattr(memory, "available", lambda device="cpu": 1024**2)  # 1 MiB free
    monkeypatch.setattr(reading, "read_scan", lambda *a, **k: pytest.fail("read the image of a refused run"))
    out = tmp_path / "out"
    code = main(["counterfactual", str(tmp_path / "any.nii.gz"), "--target", "AD", "--out", str(out), "--w", "2", "4"])
    err = capsys.readouterr().err
    assert code == 2 and "this run would need about" in err and "fewer w values" in err
    assert not out.exists()


def test_unknown_free_memory_skips_the_check_and_loaded_weights_count_once():
    est = memory.estimate(TINY, 1)
    assert memory.check_fits(est, free=None) is not None or memory.available() is None
    import unittest.mock

    with unittest.mock.patch.object(memory, "available", lambda device="cpu": None):
        assert memory.check_fits(est) is None  # nothing checked where the system does not say
    tight = int((est.total - est.weights) / memory.SAFETY) + 1
    assert memory.check_fits(est, free=tight, resident=est.weights) == tight
    with pytest.raises(ValueError):
        memory.check_fits(est, free=tight)
    assert memory.native_bytes(1000, 2) == 4 * 1000 * 10


def test_the_traced_bytes_are_kept_in_a_cache_that_may_be_missing_or_corrupt(monkeypatch, tmp_path):
    cache = tmp_path / "cache" / "memory.json"
    first = memory.estimate(TINY, 2, "bf16", INJECTION, cache=cache)
    assert cache.exists()
    monkeypatch.setattr(memory, "_trace", lambda *a: pytest.fail("traced again although the cache knows it"))
    assert memory.estimate(TINY, 2, "bf16", INJECTION, cache=cache) == first
    monkeypatch.undo()
    other = memory.estimate(TINY, 2, "bf16", INJECTION, kv_stride=2, cache=cache)  # another setting: its own entry
    assert len(__import__("json").loads(cache.read_text())) == 2 and other.weights == first.weights
    cache.write_text("{not json")
    assert memory.estimate(TINY, 2, "bf16", INJECTION, cache=cache) == first  # traced again, and the file repaired
    assert len(__import__("json").loads(cache.read_text())) == 1
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert memory.estimate(TINY, 2, "bf16", INJECTION, cache=blocked / "memory.json") == first  # cannot be written


def test_the_cache_lives_in_the_users_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("CONTROLCG_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert memory.cache_file() == tmp_path / "controlcg" / "memory.json"
    monkeypatch.setenv("CONTROLCG_CACHE_DIR", str(tmp_path / "mine"))
    assert memory.cache_file() == tmp_path / "mine" / "memory.json"
