import pytest
import torch
from monai.networks.blocks.selfattention import SABlock

from ControlCGLib.sampling.injection import (
    ControlledSelfAttention,
    SelfAttentionControl,
    reference_attention,
    self_attention_layers,
)


@torch.no_grad()
def _call(model, x, label, t=30):
    return model(x, torch.tensor([t]), torch.tensor([label]))


def _injected(model, reference, reference_label, x, label, layers=("down", "mid", "up")):
    """One recording pass on ``reference``, then one injected pass on ``x``."""
    with SelfAttentionControl(model, layers=layers) as inj:
        with inj.recording():
            _call(model, reference, reference_label)
        with inj.injecting():
            return _call(model, x, label)


@pytest.mark.parametrize("combined", [False, True])
@pytest.mark.parametrize("flash, attention_dtype", [(False, None), (True, None), (False, torch.float32)])
def test_reference_equal_to_input_reproduces_the_plain_layer(combined, flash, attention_dtype):
    torch.manual_seed(0)
    layer = SABlock(
        hidden_size=16,
        num_heads=4,
        qkv_bias=True,
        use_combined_linear=combined,
        use_flash_attention=flash,
        attention_dtype=attention_dtype,
    )
    layer.eval()
    x = torch.randn(2, 27, 16)
    assert (reference_attention(layer, x, x) - layer(x)).abs().max() <= 1e-5
    assert not torch.allclose(reference_attention(layer, x, torch.randn(2, 27, 16)), layer(x), atol=1e-3)


def test_whole_unet_equivalence_when_reference_is_the_input(tiny_model, tiny_input):
    model = tiny_model.double()
    x = tiny_input.double()[None, None]
    plain = _call(model, x, 1)
    injected = _injected(model, x, 1, x, 1)
    assert (injected - plain).abs().max() <= 1e-10
    assert plain.abs().max() > 0.1  # the comparison is not between zeros


def test_float32_equivalence(tiny_model, tiny_input):
    x = tiny_input[None, None]
    plain = _call(tiny_model, x, 0)
    injected = _injected(tiny_model, x, 0, x, 0)
    assert (injected - plain).abs().max() <= 1e-5 * max(1.0, float(plain.abs().max()))


def test_other_reference_changes_the_output(tiny_model, tiny_input):
    x = tiny_input[None, None]
    plain = _call(tiny_model, x, 0)
    injected = _injected(tiny_model, torch.flip(x, dims=[2]), 2, x, 0)
    assert (injected - plain).abs().max() > 1e-3


def test_removal_restores_the_model_exactly(tiny_model, tiny_input):
    x = tiny_input[None, None]
    before_modules = dict(tiny_model.named_modules())
    before_state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    before_out = _call(tiny_model, x, 1)
    with pytest.raises(RuntimeError, match="boom"):
        with SelfAttentionControl(tiny_model) as inj:
            assert any(isinstance(m, ControlledSelfAttention) for m in tiny_model.modules())
            with inj.recording():
                _call(tiny_model, x, 2)
            raise RuntimeError("boom")
    after_modules = dict(tiny_model.named_modules())
    assert before_modules.keys() == after_modules.keys()
    assert all(before_modules[k] is after_modules[k] for k in before_modules)
    after_state = tiny_model.state_dict()
    assert before_state.keys() == after_state.keys()
    assert all(torch.equal(before_state[k], after_state[k]) for k in before_state)
    assert torch.equal(_call(tiny_model, x, 1), before_out)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in tiny_model.modules())


def test_only_the_configured_layers_inject(tiny_model):
    all_layers = list(self_attention_layers(tiny_model))
    assert {n.split(".")[1] for n in all_layers} == {"down_blocks", "middle_block", "up_blocks"}
    with SelfAttentionControl(tiny_model, layers=("mid",)) as inj:
        wrapped = [n for n, m in tiny_model.named_modules() if isinstance(m, ControlledSelfAttention)]
        assert wrapped == inj.layer_names == ["unet.middle_block.attention.transformer_blocks.0.attn1"]
    one = all_layers[0]
    with SelfAttentionControl(tiny_model, layers=("up", one)) as inj:
        assert inj.layer_names[0] == one and all("up_blocks" in n for n in inj.layer_names[1:])
        assert len(inj.layer_names) == 1 + sum("up_blocks" in n for n in all_layers)
    with pytest.raises(ValueError, match="unknown attention layer 'side'"):
        SelfAttentionControl(tiny_model, layers=("side",))


def test_injecting_without_recording_is_an_error(tiny_model, tiny_input):
    with SelfAttentionControl(tiny_model) as inj, inj.injecting():
        with pytest.raises(RuntimeError, match="no reference tokens"):
            _call(tiny_model, tiny_input[None, None], 0)


def test_second_install_is_refused(tiny_model):
    with SelfAttentionControl(tiny_model):
        with pytest.raises(RuntimeError, match="already"):
            SelfAttentionControl(tiny_model).install()


def test_only_the_configured_layer_changes_behaviour(tiny_model, tiny_input):
    """With injection on the mid block only, the first down-block attention still sees no reference."""
    x = tiny_input[None, None]
    seen = {}
    first = next(iter(self_attention_layers(tiny_model)))
    layer = tiny_model.get_submodule(first)
    handle = layer.register_forward_hook(lambda m, i, o: seen.setdefault("out", []).append(o.clone()))
    try:
        plain = _call(tiny_model, x, 0)
        injected = _injected(tiny_model, torch.flip(x, dims=[2]), 2, x, 0, layers=("mid",))
    finally:
        handle.remove()
    assert torch.equal(seen["out"][0], seen["out"][2])  # the down layer: same output with and without injection
    assert (injected - plain).abs().max() > 1e-4  # while the mid layer's injection changes the result
