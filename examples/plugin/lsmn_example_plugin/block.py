"""A block: an nn.Module class built `Class(width=..., **args)` that maps activations [..., width] to
their residual update of the same shape (the body adds it). Every sharing scheme runs it, by its
parameters' own names: masks cover its matrices, mixtures and experts copy all of it.

ReZero, after "ReZero is All You Need: Fast Convergence at Large Depth": the update is a two-layer
MLP scaled by a learned scalar that starts at 0, so a deep body starts as the identity.

    model: {block: rezero}                                  # or, with arguments:
    model: {block: {name: rezero, args: {expansion: 4}}}
"""

import torch
import torch.nn.functional as F
from torch import nn


class ReZero(nn.Module):
    def __init__(self, width: int, expansion: int = 2):
        super().__init__()
        self.up = nn.Linear(width, expansion * width)
        self.down = nn.Linear(expansion * width, width)
        self.alpha = nn.Parameter(torch.zeros(1))  # the residual weight, 0 at the start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.down(F.gelu(self.up(x)))
