"""Bit-packed bool masks in torch, on any device, in numpy.packbits' order (the first element in
a byte's high bit), so that they pack and unpack like the routing files' masks.

A mask of n weights takes ceil(n / 8) bytes instead of n; unpacking is a few elementwise
operations, cheap on a GPU next to the matmuls that use the mask.
"""

from __future__ import annotations

import torch


def _shifts(device) -> torch.Tensor:
    return torch.arange(7, -1, -1, dtype=torch.uint8, device=device)


def pack(bits: torch.Tensor) -> torch.Tensor:
    """bool [..., n] -> uint8 [..., ceil(n / 8)]."""
    n = bits.shape[-1]
    padded = torch.cat([bits.to(torch.uint8), bits.new_zeros((*bits.shape[:-1], -n % 8), dtype=torch.uint8)], -1)
    return (padded.view(*bits.shape[:-1], -1, 8) << _shifts(bits.device)).sum(-1, dtype=torch.uint8)


def unpack(packed: torch.Tensor, n: int) -> torch.Tensor:
    """uint8 [..., m] -> bool [..., n], n <= 8m."""
    if packed.is_meta:  # a skeleton's masks: a shape, no bits (a meta op's first use costs up to seconds)
        return torch.empty((*packed.shape[:-1], n), dtype=torch.bool, device="meta")
    bits = (packed.unsqueeze(-1) >> _shifts(packed.device)) & 1
    return bits.flatten(-2)[..., :n].bool()
