"""Fewer keys for the large self-attention layers: exact where the tokens are constant within each block, confined to
the layers it is meant for, composed with injection, and gone again after the run."""

import pytest
import torch
import torch.nn.functional as F
from monai.networks.blocks.selfattention import SABlock

from ControlCGLib.model.config import ConfigError
from ControlCGLib.sampling import token_downsampling
from ControlCGLib.sampling.guided_step import GuidedStep
from ControlCGLib.sampling.injection import ControlledSelfAttention, SelfAttentionControl, self_attention_layers
from ControlCGLib.sampling.sampler import counterfactual
from ControlCGLib.sampling.settings import SamplingConfig
from ControlCGLib.sampling.token_downsampling import downsample_tokens, token_grid


def test_token_grids_follow_the_unet_levels():
    assert token_grid(40 * 48 * 40, (40, 48, 40)) == (40, 48, 40)
    assert token_grid(9600, (40, 48, 40)) == (20, 24, 20)
    assert token_grid(1200, (40, 48, 40)) == (10, 12, 10)
    assert token_grid(5 * 4 * 4, (9, 8, 8)) == (5, 4, 4)  # MONAI's stride-2 convolutions round up
    with pytest.raises(ValueError, match="1000 attention tokens lie on no level of the model grid"):
        token_grid(1000, (40, 48, 40))


def test_tokens_are_averaged_over_blocks_of_their_own_grid():
    volume = torch.randn(2, 3, 4, 6, 5)  # (B, C, D, H, W)
    tokens = volume.permute(0, 2, 3, 4, 1).reshape(2, -1, 3)  # MONAI's SpatialTransformer order
    pooled = downsample_tokens(tokens, (4, 6, 5), 2)
    expected = F.avg_pool3d(volume, 2, ceil_mode=True).permute(0, 2, 3, 4, 1).reshape(2, -1, 3)
    assert torch.allclose(pooled, expected)
    assert torch.allclose(pooled[0, -1], volume[0, :, 2:4, 4:6, 4].mean(dim=(1, 2)))  # the cut edge block
    with pytest.raises(ValueError, match="do not fill the grid"):
        downsample_tokens(tokens, (4, 6, 4), 2)


def _layer():
    torch.manual_seed(0)
    return SABlock(hidden_size=16, num_heads=2, qkv_bias=True, use_flash_attention=True).eval()


class _Holder(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.attn1 = layer


@torch.no_grad()
def test_fewer_keys_are_exact_when_tokens_are_constant_within_blocks():
    layer = _layer()
    coarse = torch.randn(1, 16, 3, 2, 4)
    fine = coarse.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4)  # constant in 2^3 blocks
    x = fine.permute(0, 2, 3, 4, 1).reshape(1, -1, 16)
    holder = _Holder(layer)
    with SelfAttentionControl(holder, (), kv_stride=2, grid=(6, 4, 8), min_tokens=1):
        assert isinstance(holder.attn1, ControlledSelfAttention)
        fewer = holder.attn1(x)
        other = holder.attn1(x + 0.5 * torch.randn_like(x))  # not constant within blocks: not the same as exact
    assert holder.attn1 is layer
    assert torch.allclose(fewer, layer(x), atol=1e-5)
    assert not torch.allclose(other, layer(x + 0.0), atol=1e-3)


@torch.no_grad()
def test_only_layers_with_enough_tokens_get_fewer_keys(monkeypatch, tiny_model, tiny_input):
    x = tiny_input[None, None]
    t = tiny_model.config.schedule.num_train_timesteps // 2
    with GuidedStep(tiny_model, [1], None, "fp32") as step:
        exact = step({(1, 2.0): x}, t)[1, 2.0]
    with GuidedStep(tiny_model, [1], None, "fp32", kv_stride=2) as step:  # 64 and 8 tokens: below MIN_TOKENS
        assert torch.equal(step({(1, 2.0): x}, t)[1, 2.0], exact)
    monkeypatch.setattr(token_downsampling, "MIN_TOKENS", 64)  # now the 4^3-token layers qualify, the 2^3 ones not
    seen = []
    original = token_downsampling.downsample_tokens

    def logged(tokens, shape, stride):
        seen.append(tuple(shape))
        return original(tokens, shape, stride)

    monkeypatch.setattr("ControlCGLib.sampling.injection.downsample_tokens", logged)
    with GuidedStep(tiny_model, [1], None, "fp32", kv_stride=2) as step:
        fewer = step({(1, 2.0): x}, t)[1, 2.0]
    assert seen and set(seen) == {(4, 4, 4)}
    assert not torch.equal(fewer, exact)
    assert (fewer - exact).abs().max() < 0.5 * exact.abs().max()
    assert not any(isinstance(m, ControlledSelfAttention) for m in tiny_model.modules())  # the model is left as it was
    assert all(isinstance(m, SABlock) for m in self_attention_layers(tiny_model).values())


@torch.no_grad()
def test_with_injection_a_reference_equal_to_the_input_changes_nothing(monkeypatch, tiny_model, tiny_input):
    """Injection's duplicated keys stay a no-op when both halves are downsampled alike."""
    monkeypatch.setattr(token_downsampling, "MIN_TOKENS", 64)
    x = tiny_input[None, None]
    t, label = torch.tensor([30]), torch.tensor([1])
    with SelfAttentionControl(tiny_model, (), kv_stride=2):
        plain = tiny_model(x, t, label)
    with SelfAttentionControl(tiny_model, ("down", "mid", "up"), kv_stride=2) as injector:
        with injector.recording():
            tiny_model(x, t, label)
        with injector.injecting():
            injected = tiny_model(x, t, label)
        with injector.injecting():
            other = tiny_model(x.flip(-1), t, label)
    assert torch.allclose(injected, plain, atol=1e-5)
    assert not torch.allclose(other.flip(-1), plain, atol=1e-3)


def test_the_sampler_records_and_repeats_the_stride(monkeypatch, tiny_model, tiny_input):
    monkeypatch.setattr(token_downsampling, "MIN_TOKENS", 64)
    sampling = SamplingConfig(steps=4, injection=None, kv_stride=2)
    one = counterfactual(tiny_model, tiny_input, "AD", 2.0, sampling, seed=1, source="CN")
    again = counterfactual(tiny_model, tiny_input, "AD", 2.0, sampling, seed=1, source="CN")
    exact = counterfactual(tiny_model, tiny_input, "AD", 2.0, SamplingConfig(steps=4, injection=None), seed=1)
    assert torch.equal(one[2.0], again[2.0])
    assert not torch.equal(one[2.0], exact[2.0])
    assert one.settings["sampling"]["kv_stride"] == 2


def test_a_bad_stride_is_named():
    with pytest.raises(ConfigError, match=r"sampling.kv_stride must lie in \[1, 4\], got 0"):
        SamplingConfig(kv_stride=0)
    with pytest.raises(ConfigError, match="sampling.kv_stride must be a whole number"):
        SamplingConfig(kv_stride=1.5)


def test_the_command_line_refuses_a_bad_stride(tmp_path, capsys):
    from ControlCGLib.cli import main

    code = main(["counterfactual", str(tmp_path / "missing.nii.gz"), "--target", "AD", "--out", str(tmp_path / "o")]
                + ["--kv-stride", "9"])  # fmt: skip
    assert code == 2
    assert "--kv-stride must lie in [1, 4], got 9" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
