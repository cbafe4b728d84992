"""Starting a network from a trained model folder whose network is a part of it.

Two kinds of growth are carried:

- **new attention blocks** at existing levels (the ``cpu`` preset's middle-level attention): MONAI zero-initialises a
  spatial transformer's output projection, so the grown network starts as the stored one;
- **finer outer levels** (the ``cpu-2mm`` preset: one 2 mm level above the ``cpu`` preset's three): the stored
  levels become the grown network's inner levels, tensor for tensor (down block ``i`` becomes ``i + k``; the up blocks,
  the middle block, the input and output convolutions and the time and class embeddings keep their names). The new
  levels start as a pass-through: their residual blocks add nothing, their down-sampling convolution keeps the centre
  voxel of each 2x2x2 block and their up-sampling copies it back, so the grown network first computes the stored one
  on every second voxel and repeats its answer at the fine grid. Plain subsampling (not an averaging filter) keeps the
  per-voxel noise level the inner levels were trained on. Training then teaches the new levels the fine detail.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .checkpoints import WEIGHTS, CheckpointError, read_checkpoint_config
from .config import ModelConfig


class WarmStartError(CheckpointError):
    """A model folder whose weights cannot be a part of the network being started."""


def outer_levels(stored: ModelConfig, grown: ModelConfig) -> int:
    """How many finer levels ``grown`` adds above ``stored``; refuses, naming the difference, a network whose inner
    levels are not the stored one's."""
    k = len(grown.unet.channels) - len(stored.unet.channels)
    if k < 0 or tuple(grown.unet.channels[k:]) != tuple(stored.unet.channels):
        raise WarmStartError(
            f"the stored levels {list(stored.unet.channels)} are not the inner levels of {list(grown.unet.channels)}"
        )
    lost = [i for i, (a, b) in enumerate(zip(stored.unet.attention_levels, grown.unet.attention_levels[k:])) if a > b]
    if lost:
        raise WarmStartError(f"the grown network drops the stored self-attention at level(s) {lost}")
    if k and grown.unet.channels[0] != stored.unet.channels[0]:
        raise WarmStartError(
            f"a finer level must keep {stored.unet.channels[0]} channels (the input and output convolutions and the "
            f"time embedding are sized by it), got {grown.unet.channels[0]}"
        )
    if tuple(g * 2**k for g in stored.grid) != tuple(grown.grid):
        raise WarmStartError(f"{k} finer level(s) need the grid {[g * 2**k for g in stored.grid]}, got {grown.grid}")
    return k


def _renamed(key: str, k: int) -> str:
    match = re.match(r"unet\.down_blocks\.(\d+)\.(.*)", key)
    return f"unet.down_blocks.{int(match.group(1)) + k}.{match.group(2)}" if match else key


def _centre_identity(conv: nn.Conv3d) -> None:
    """A k x k x k convolution that copies each channel's centre voxel (any stride)."""
    with torch.no_grad():
        conv.weight.zero_()
        centre = tuple(s // 2 for s in conv.weight.shape[2:])
        for c in range(min(conv.in_channels, conv.out_channels)):
            conv.weight[(c, c, *centre)] = 1.0
        if conv.bias is not None:
            conv.bias.zero_()


def _pass_through(block: nn.Module) -> None:
    """A residual block that returns its input's first channels: no residual, the skip path an identity."""
    with torch.no_grad():
        block.conv2.conv.weight.zero_()
        block.conv2.conv.bias.zero_()
    skip = getattr(block.skip_connection, "conv", None)
    if skip is not None:
        _centre_identity(skip)  # hidden state first, the skipped features after (MONAI's UpBlock concatenates so)


def _start_new_levels(model: nn.Module, k: int, n_stored: int) -> None:
    unet = model.unet
    for block in unet.down_blocks[:k]:
        for resnet in block.resnets:
            _pass_through(resnet)
        _centre_identity(block.downsampler.op.conv)
    for block in unet.up_blocks[n_stored - 1 :]:
        if block is not unet.up_blocks[n_stored - 1]:
            for resnet in block.resnets:
                _pass_through(resnet)
        if getattr(block, "upsampler", None) is not None:
            _centre_identity(block.upsampler.postconv.conv)


def warm_start(model: nn.Module, folder: str | Path) -> list[str]:
    """Load a model folder's weights into ``model``, which may have gained attention blocks or finer outer levels.
    Every stored tensor must find its place with its shape, and nothing may be missing but the new blocks. Returns
    the grown network's new keys."""
    stored, _ = read_checkpoint_config(folder)
    if not isinstance(stored, ModelConfig):
        raise WarmStartError(f"{folder} holds a classifier, not a diffusion model")
    path = Path(folder) / WEIGHTS
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WarmStartError(f"{path} is not a readable safetensors file ({exc})") from None
    k = outer_levels(stored, model.config)
    state = {_renamed(key, k): value for key, value in state.items()}
    expected = model.state_dict()
    extra = sorted(set(state) - set(expected))
    wrong = sorted(key for key in set(expected) & set(state) if expected[key].shape != state[key].shape)
    missing = sorted(set(expected) - set(state))
    new_levels = {f"unet.down_blocks.{i}." for i in range(k)} | {
        f"unet.up_blocks.{i}." for i in range(len(stored.unet.channels), len(model.config.unet.channels))
    }
    upsampler = f"unet.up_blocks.{len(stored.unet.channels) - 1}.upsampler." if k else None
    foreign = [
        key
        for key in missing
        if ".attentions." not in key
        and not any(key.startswith(p) for p in new_levels)
        and not (upsampler and key.startswith(upsampler))
    ]
    if extra or wrong or foreign:
        raise WarmStartError(
            f"cannot start from {folder}: {len(extra)} unexpected, {len(wrong)} wrongly shaped and {len(foreign)} "
            f"missing tensors outside new blocks (e.g. {(extra + wrong + foreign)[:3]})"
        )
    if k:
        _start_new_levels(model, k, len(stored.unet.channels))
    model.load_state_dict(state, strict=False)
    return missing
