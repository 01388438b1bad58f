"""Magnitude pruning's pure mask functions, shared by the pruning searches (IMP with rewinding,
RSN2): masks are {parameter name: bool tensor}, and ranking is global over all the given tensors.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def prune_by_magnitude(weights: Mapping[str, torch.Tensor], masks: dict[str, torch.Tensor],
                       rate: float) -> dict[str, torch.Tensor]:
    """Drop `rate` of the surviving weights with the smallest magnitude, ranked over all matrices."""
    names = list(masks)
    flat_mask = torch.cat([masks[n].flatten() for n in names])
    magnitude = torch.cat([weights[n].detach().abs().flatten() for n in names])
    n_prune = int(round(rate * flat_mask.sum().item()))
    if n_prune == 0:
        return masks
    scores = torch.where(flat_mask, magnitude, torch.full_like(magnitude, float("inf")))
    flat_mask = flat_mask.clone()
    flat_mask[torch.topk(scores, n_prune, largest=False).indices] = False
    pieces = flat_mask.split([masks[n].numel() for n in names])
    return {n: p.view_as(masks[n]) for n, p in zip(names, pieces)}


def keep_largest(weights: Mapping[str, torch.Tensor], masks: dict[str, torch.Tensor], n_keep: int) -> dict:
    """Narrow `masks` to their `n_keep` surviving weights of largest magnitude (RSN2's cut)."""
    alive = sum(int(m.sum()) for m in masks.values())
    return prune_by_magnitude(weights, masks, max(0.0, 1 - n_keep / alive))


def density(masks: dict[str, torch.Tensor]) -> float:
    return sum(m.sum().item() for m in masks.values()) / sum(m.numel() for m in masks.values())
