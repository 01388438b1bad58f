"""The Studio's own image checkpoint: a small convolutional network pretrained on Fashion-MNIST's
60,000 training images (its ten classes), its weights in fashion_conv.safetensors beside this file
(`lsmn models pretrain fashion-conv` makes them again). A config opens it as any user's module,
its weights found beside the class (its WEIGHTS):

    model: {pretrained: {class: "lsmn_core.pretrained.fashion_conv:FashionConv"}}

for low-data image tasks (digits with a few labels per class). Any image size works: the features
are pooled over the last map.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS = Path(__file__).with_name("fashion_conv.safetensors")


class Residual(nn.Module):
    """x + conv(gelu(norm(conv(x)))): one block of the layers."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.norm = nn.GroupNorm(4, width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.norm(self.conv1(x))))


class FashionConv(nn.Module):
    """Grey images [B, H, W] -> features [B, width]: a 3 x 3 stem, `depth` residual blocks (the
    layers), halving the map after the first two, and average pooling."""

    WEIGHTS = WEIGHTS  # the pretrained weights, shipped beside this file

    def __init__(self, width: int = 32, depth: int = 4):
        super().__init__()
        self.width = width
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.blocks = nn.ModuleList(Residual(width) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x.unsqueeze(1))
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i < 2 and min(h.shape[-2:]) >= 4:
                h = F.avg_pool2d(h, 2)
        return h.mean((-2, -1))
