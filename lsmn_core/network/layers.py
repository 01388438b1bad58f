"""Building blocks: modality encoders, the isometric residual block, task heads.

The residual block is written as a function of its parameters so that a sharing scheme can hand it
one weight per task, stacked `[T, ...]`, and all tasks run through one batched matmul.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lsmn_core.data.tasks import TaskSpec


def init_block(width: int, hidden: int) -> dict[str, torch.Tensor]:
    """One residual block's parameters: nn.Linear's default initialisation, identity norm."""

    def uniform(shape, fan_in):
        bound = 1 / math.sqrt(fan_in)
        return torch.empty(shape).uniform_(-bound, bound)

    return {
        "norm_weight": torch.ones(width), "norm_bias": torch.zeros(width),
        "w_in": uniform((hidden, width), width), "b_in": uniform((hidden,), width),
        "w_out": uniform((width, hidden), hidden), "b_out": uniform((width,), hidden),
    }


def block_index(name: str) -> int:
    """The block a body parameter or mask belongs to, from a name such as 'body.blocks.3.w_in'."""
    return int(name.split("blocks.", 1)[1].split(".", 1)[0])


ENCODER_LAYER = -1  # where an encoder's masks stand in per-layer reports: before block 0


def mask_layer(name: str) -> int:
    """The layer a mask belongs to: its block, or ENCODER_LAYER for a shared encoder's weight (a
    scheme that prunes encoders names their masks 'encoders.<encoder>.<parameter>')."""
    return ENCODER_LAYER if name.startswith("encoders.") else block_index(name)


def layer_label(layer: int) -> str:
    return "encoder" if layer == ENCODER_LAYER else f"block {layer}"


def stacked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x [T, B, in] times per-task weights [T, out, in] (or one shared weight [1, out, in])."""
    if weight.shape[0] == 1:
        y = x @ weight[0].T
    else:
        y = torch.bmm(x, weight.transpose(1, 2))
    return y + bias.unsqueeze(1)


def block_branch(x: torch.Tensor, p: dict[str, torch.Tensor], linear=stacked_linear) -> torch.Tensor:
    """The residual branch W_out gelu(W_in LN(x) + b_in) + b_out, per task.

    x is [T, B, d]; every parameter in p has a leading task axis of size T or 1 (shared).
    `linear` computes x W^T + b (sparse inference passes a CSR version).
    """
    if p["norm_weight"].shape[0] == 1:  # one norm for all tasks: layer_norm's own affine, one pass
        h = F.layer_norm(x, x.shape[-1:], p["norm_weight"][0], p["norm_bias"][0])
    else:
        h = F.layer_norm(x, x.shape[-1:]) * p["norm_weight"].unsqueeze(1) + p["norm_bias"].unsqueeze(1)
    h = F.gelu(linear(h, p["w_in"], p["b_in"]))
    return linear(h, p["w_out"], p["b_out"])


def residual_block(x: torch.Tensor, p: dict[str, torch.Tensor], linear=stacked_linear) -> torch.Tensor:
    """Pre-norm MLP block: x + branch(x)."""
    return x + block_branch(x, p, linear)


class PoolTo(nn.AdaptiveAvgPool2d):
    """Average-pools to size x size; an input of that size already (an 8 x 8 digit after the stride-2
    convolution) passes through untouched: pooling 1 x 1 windows is the identity, but not free."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.shape[-2:] == (self.output_size, self.output_size) else super().forward(x)


class ImageEncoder(nn.Module):
    """Two small convolutions and a pooled projection to width d; works for any image size."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            PoolTo(4), nn.Flatten(),
        )
        self.project = nn.Linear(32 * 16, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.conv(x.unsqueeze(1)))


class VectorEncoder(nn.Module):
    def __init__(self, n_features: int, width: int):
        super().__init__()
        self.project = nn.Linear(n_features, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x)


def make_encoder(spec: TaskSpec, width: int) -> nn.Module:
    if spec.modality == "image":
        return ImageEncoder(width)
    return VectorEncoder(math.prod(spec.input_shape), width)


class Head(nn.Module):
    def __init__(self, width: int, n_outputs: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.linear = nn.Linear(width, n_outputs)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(h))
