"""A user block for LSMN Studio: a gated linear unit (GLU) feed-forward block, as in "GLU Variants
Improve Transformer". It maps activations [..., width] to their residual update; the body adds it.

    model: {block: {class: "gated_block:GatedBlock", args: {expansion: 2}}}

with this folder on PYTHONPATH (`PYTHONPATH=examples lsmn train examples/user-block.yaml`).
"""

import torch
import torch.nn.functional as F
from torch import nn


class GatedBlock(nn.Module):
    def __init__(self, width: int, expansion: int = 2):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.gate = nn.Linear(width, expansion * width)
        self.value = nn.Linear(width, expansion * width)
        self.out = nn.Linear(expansion * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return self.out(F.silu(self.gate(h)) * self.value(h))
