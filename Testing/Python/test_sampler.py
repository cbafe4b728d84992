import contextlib
import dataclasses

import pytest
import torch

from ControlCGLib.model.config import ConfigError
from ControlCGLib.progress import Cancelled
from ControlCGLib.sampling.noise import make_generator, sample_noise
from ControlCGLib.sampling.sampler import counterfactual, sampling_timesteps
from ControlCGLib.sampling.schedule import Schedule
from ControlCGLib.sampling.settings import InjectionConfig, SamplingConfig

FAST = SamplingConfig(steps=5)


class CallLog:
    """Records (label, attention mode) of every UNet pass (the guided step calls the UNet with a label's context)."""

    def __init__(self, model):
        self.calls = []
        self.model = model
        self.handle = model.unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _label(self, context: torch.Tensor) -> int:
        rows = self.model.class_embedding.weight.detach()
        return int((rows - context.reshape(1, -1).float()).abs().sum(dim=1).argmin())

    def _hook(self, module, args, kwargs):
        mode = "plain"
        for m in module.modules():
            if hasattr(m, "_control"):
                mode = m._control.mode
                break
        self.calls.append((self._label(kwargs["context"]), mode))

    def close(self):
        self.handle.remove()


def test_same_seed_gives_identical_output(tiny_model, tiny_input):
    a = counterfactual(tiny_model, tiny_input, "AD", (1.0, 3.0), FAST, seed=7)
    b = counterfactual(tiny_model, tiny_input, "AD", (1.0, 3.0), FAST, seed=7)
    c = counterfactual(tiny_model, tiny_input, "AD", (1.0, 3.0), FAST, seed=8)
    assert all(torch.equal(a[w], b[w]) for w in (1.0, 3.0))
    assert not torch.equal(a[1.0], c[1.0])
    assert not torch.equal(a[1.0], a[3.0])


@pytest.mark.parametrize(
    "sampling",
    [
        FAST,
        SamplingConfig(steps=5, solver="ddpm"),
        SamplingConfig(steps=5, injection=InjectionConfig(reference_noise="fresh")),
    ],
)
def test_sweep_equals_separate_runs(tiny_model, tiny_input, sampling):
    ws = (0.0, 1.5, 4.0)
    sweep = counterfactual(tiny_model, tiny_input, 1, ws, sampling, seed=3)
    for w in ws:
        single = counterfactual(tiny_model, tiny_input, 1, w, sampling, seed=3)
        assert (single[w] - sweep[w]).abs().max() <= 1e-4


def test_reference_pass_is_shared_across_w(tiny_model, tiny_input):
    log = CallLog(tiny_model)
    try:
        counterfactual(tiny_model, tiny_input, "AD", (0.0, 1.0, 2.0), FAST, seed=0)
    finally:
        log.close()
    null = tiny_model.null_class
    records = [c for c in log.calls if c[1] == "record"]
    assert records == [(null, "record")] * FAST.steps  # one reference pass per step, with the null class
    # per step: w=0 -> cond only; w=1, w=2 -> cond + uncond: 5 injected passes; at the first step the three w share
    # one x_t, so one conditional and one unconditional pass
    assert len([c for c in log.calls if c[1] == "inject"]) == 5 * FAST.steps - 3


def _plain_conditional_ddim(model, label, steps, seed):
    """Hand-written conditional DDIM from the same starting noise, no guidance, no injection."""
    schedule = Schedule(model.config.schedule)
    x = sample_noise((1, 1, *model.config.grid), make_generator(seed), None)
    labels = torch.tensor([label])
    with torch.no_grad():
        for t, s in schedule.pairs(schedule.timesteps(steps)):
            v = model(x, torch.tensor([t]), labels)
            x0, eps = schedule.split_v(x, v, t)
            x = schedule.ddim_step(x0, eps, t=t, s=s)
    return x[0, 0]


def test_w0_equals_plain_conditional_sampling(tiny_model, tiny_input):
    sampling = SamplingConfig(steps=6, injection=None)
    result = counterfactual(tiny_model, tiny_input, 1, 0.0, sampling, seed=5)
    assert torch.equal(result[0.0], _plain_conditional_ddim(tiny_model, 1, 6, seed=5))


def test_guidance_changes_the_result(tiny_model, tiny_input):
    sampling = SamplingConfig(steps=6, injection=None)
    result = counterfactual(tiny_model, tiny_input, 1, (0.0, 2.0), sampling, seed=5)
    assert (result[2.0] - result[0.0]).abs().max() > 1e-3


def test_cancel_stops_within_one_step_and_returns_nothing(tiny_model, tiny_input):
    steps_seen = []
    log = CallLog(tiny_model)
    try:
        with pytest.raises(Cancelled):
            counterfactual(
                tiny_model,
                tiny_input,
                "AD",
                (1.0, 2.0),
                SamplingConfig(steps=10),
                seed=0,
                on_step=lambda info: steps_seen.append(info.index),
                should_stop=lambda: len(steps_seen) >= 3,
            )
    finally:
        log.close()
    assert steps_seen == [1, 2, 3]
    assert len(log.calls) == 3 * (1 + 2 * 2) - 2  # none after the stop was requested (the first step shares 2)
    assert not any(hasattr(m, "_control") for m in tiny_model.modules())  # attention control removed


def test_progress_callback_sees_every_step(tiny_model, tiny_input):
    infos = []
    counterfactual(tiny_model, tiny_input, 0, 1.0, FAST, on_step=infos.append)
    assert [i.index for i in infos] == list(range(1, FAST.steps + 1))
    assert [i.timestep for i in infos] == Schedule(tiny_model.config.schedule).timesteps(FAST.steps)
    assert all(i.total == FAST.steps and set(i.x0) == {1.0} for i in infos)


def test_full_ddpm_chain_runs_every_timestep(tiny_model, tiny_input):
    T = tiny_model.config.schedule.num_train_timesteps
    sampling = SamplingConfig(steps=T, solver="ddpm", injection=None)
    infos = []
    a = counterfactual(tiny_model, tiny_input, 0, 1.0, sampling, seed=1, on_step=infos.append)
    b = counterfactual(tiny_model, tiny_input, 0, 1.0, sampling, seed=1)
    assert [i.timestep for i in infos] == list(range(T - 1, -1, -1))
    assert torch.equal(a[1.0], b[1.0]) and torch.isfinite(a[1.0]).all()


def test_start_strength_starts_from_the_noised_input(tiny_model, tiny_input):
    schedule = Schedule(tiny_model.config.schedule)
    sampling = SamplingConfig(steps=10, start_strength=0.3)
    assert sampling_timesteps(schedule, sampling) == schedule.timesteps(10)[-3:]
    infos = []
    counterfactual(tiny_model, tiny_input, 0, 1.0, sampling, on_step=infos.append)
    assert len(infos) == 3


def test_injection_window_limits_the_reference_passes(tiny_model, tiny_input):
    log = CallLog(tiny_model)
    try:
        sampling = SamplingConfig(steps=8, injection=InjectionConfig(window=(0.0, 0.5)))
        counterfactual(tiny_model, tiny_input, 0, 1.0, sampling)
    finally:
        log.close()
    assert sum(c[1] == "record" for c in log.calls) == 4


def test_bad_input_is_refused(tiny_model, tiny_input):
    with pytest.raises(ValueError, match=r"model grid is \(8, 8, 8\)"):
        counterfactual(tiny_model, torch.zeros(8, 8, 9), 0, 1.0, FAST)
    with pytest.raises(ValueError, match="one 3D volume"):
        counterfactual(tiny_model, torch.zeros(2, 8, 8, 8), 0, 1.0, FAST)
    with pytest.raises(ValueError, match="one 3D volume"):
        counterfactual(tiny_model, torch.zeros(8, 8), 0, 1.0, FAST)
    bad = tiny_input.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        counterfactual(tiny_model, bad, 0, 1.0, FAST)
    with pytest.raises(ConfigError, match="unknown class 'MCI'"):
        counterfactual(tiny_model, tiny_input, "MCI", 1.0, FAST)
    with pytest.raises(ValueError, match="guidance scale"):
        counterfactual(tiny_model, tiny_input, 0, -1.0, FAST)


def test_model_mode_is_restored(tiny_model, tiny_input):
    tiny_model.train()
    counterfactual(tiny_model, tiny_input, 0, 1.0, FAST)
    assert tiny_model.training
    with contextlib.suppress(Cancelled):
        counterfactual(tiny_model, tiny_input, 0, 1.0, FAST, should_stop=lambda: True)
    assert tiny_model.training


def test_model_dtype_is_followed(tiny_model, tiny_input):
    model = tiny_model.double()
    result = counterfactual(model, tiny_input, 1, 1.0, FAST, seed=0)
    assert result[1.0].dtype == torch.float32 and torch.isfinite(result[1.0]).all()


def test_empty_injection_window_and_bad_seed_are_refused(tiny_model, tiny_input):
    sampling = SamplingConfig(steps=4, injection=InjectionConfig(window=(0.9, 1.0)))
    with pytest.raises(ValueError, match="holds none"):
        counterfactual(tiny_model, tiny_input, 0, 1.0, sampling)
    with pytest.raises(TypeError, match="seed"):
        counterfactual(tiny_model, tiny_input, 0, 1.0, FAST, seed="a")


def test_bf16_autocast_is_close_to_fp32_and_only_the_unet_runs_in_bf16(tiny_model, tiny_input):
    fp32 = counterfactual(tiny_model, tiny_input, 1, [2.0], SamplingConfig(steps=6), seed=0)[2.0]
    bf16 = counterfactual(tiny_model, tiny_input, 1, [2.0], SamplingConfig(steps=6, precision="bf16"), seed=0)[2.0]
    assert bf16.dtype == torch.float32  # the scheduler arithmetic and the result stay fp32
    assert not torch.equal(fp32, bf16)
    assert float((fp32 - bf16).abs().mean()) < 0.05 * float(fp32.abs().mean())
    again = counterfactual(tiny_model, tiny_input, 1, [2.0], SamplingConfig(steps=6, precision="bf16"), seed=0)[2.0]
    assert torch.equal(bf16, again)  # still deterministic
    with pytest.raises(ConfigError, match="precision"):
        SamplingConfig(precision="fp16")


def test_a_full_counterfactual_is_pinned_to_its_number(tiny_model, tiny_input):
    """An accidental numeric change anywhere in the loop (noise order, schedule, guidance, injection, the step) moves
    these sums; a deliberate one updates them here, in the same commit that says why. Measured on x86-64 CPUs; the
    tolerance allows other CPUs' last-bit differences, not a change of method."""
    sweep = counterfactual(tiny_model, tiny_input, "AD", (0.0, 2.0), SamplingConfig(steps=5), seed=0)
    started = counterfactual(tiny_model, tiny_input, "AD", 2.0, SamplingConfig(steps=5, start_strength=0.4), seed=0)
    assert float(sweep[0.0].double().sum()) == pytest.approx(-132.09684, abs=2e-3)
    assert float(sweep[2.0].double().sum()) == pytest.approx(-120.94175, abs=2e-3)
    assert float(started[2.0].double().sum()) == pytest.approx(-75.60219, abs=2e-3)


def test_a_bf16_run_holds_the_weights_channels_last_and_gives_them_back(tiny_model, tiny_input):
    from ControlCGLib.sampling.guided_step import GuidedStep

    conv = next(p for p in tiny_model.parameters() if p.ndim == 5 and p.shape[1] > 1)
    with GuidedStep(tiny_model, [1], None, "bf16"):
        assert conv.is_contiguous(memory_format=torch.channels_last_3d) and not conv.is_contiguous()
    assert conv.is_contiguous()
    sampling = SamplingConfig(steps=4, injection=None, precision="bf16")
    one = counterfactual(tiny_model, tiny_input, "AD", 2.0, sampling, seed=2)
    again = counterfactual(tiny_model, tiny_input, "AD", 2.0, sampling, seed=2)
    exact = counterfactual(tiny_model, tiny_input, "AD", 2.0, dataclasses.replace(sampling, precision="fp32"), seed=2)
    assert torch.equal(one[2.0], again[2.0])
    assert (one[2.0] - exact[2.0]).abs().mean() < 0.05  # bf16 rounding (a random tiny model), not another result
    assert all(p.is_contiguous() for p in tiny_model.parameters())
