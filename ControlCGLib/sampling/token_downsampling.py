"""Fewer keys and values for the large self-attention layers: the speed setting ``SamplingConfig.kv_stride``.

A self-attention layer at 8 mm on the embedded model's grid holds 20 x 24 x 20 = 9600 tokens; its softmax over
9600^2 scores per head costs more than every convolution of the UNet together on a CPU (docs/performance.md: 3 such
layers were 67 % of a bfloat16 pass). Their attention is nearly uniform (entropy 0.98-0.998 of the maximum,
docs/attention_probe), so neighbouring keys say almost the same thing. As in token downsampling (ToDo, Smith et al.
2024, training-free), the queries stay at full resolution while the keys and values come from the tokens averaged
over ``stride``^3 blocks of their grid: 8x fewer scores at stride 2. It is exact when the tokens are constant within
each block (every key then appears ``stride``^3 times, which the softmax cannot tell from once); on the embedded model
it moves the v prediction by 0.02-0.04 % and the guidance difference (cond - uncond) by 0.7 %, against 0.4-1 % and
20 % for bfloat16 (benchmarks/speed.py); on held-out subjects the metrics did not move (docs/performance.md).

Only layers with at least :data:`MIN_TOKENS` tokens are downsampled; below that the exact softmax is cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: Self-attention layers with fewer tokens keep their exact keys (the embedded model's 16 mm layers: 1200 tokens).
MIN_TOKENS = 4096


def token_grid(n_tokens: int, grid: Sequence[int]) -> tuple[int, ...]:
    """The (D, H, W) a layer's ``n_tokens`` tokens lie on: the model grid halved (rounding up, as MONAI's strided
    convolutions do) once per UNet level."""
    shape = tuple(int(g) for g in grid)
    while math.prod(shape) > n_tokens:
        shape = tuple((s + 1) // 2 for s in shape)
    if math.prod(shape) != n_tokens:
        raise ValueError(f"{n_tokens} attention tokens lie on no level of the model grid {tuple(grid)}")
    return shape


def downsample_tokens(tokens: torch.Tensor, shape: Sequence[int], stride: int) -> torch.Tensor:
    """(B, N, C) tokens on the grid ``shape`` (MONAI's order: D, H, W flattened, channels last) averaged over
    ``stride``^3 blocks; blocks cut by the grid's edge average what they hold."""
    b, n, c = tokens.shape
    if math.prod(shape) != n:
        raise ValueError(f"{n} tokens do not fill the grid {tuple(shape)}")
    volume = tokens.transpose(1, 2).reshape(b, c, *shape)
    pooled = F.avg_pool3d(volume, stride, ceil_mode=True)
    return pooled.flatten(2).transpose(1, 2)


def downsampled(n_tokens: int, stride: int, min_tokens: int | None = None) -> bool:
    """Whether a layer of ``n_tokens`` tokens gets fewer keys at ``stride``."""
    return stride > 1 and n_tokens >= (MIN_TOKENS if min_tokens is None else min_tokens)
