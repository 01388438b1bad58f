"""`ties`: "TIES-Merging: Resolving Interference When Merging Models". Each task vector is trimmed,
per tensor, to its `density` largest entries by magnitude; each weight's sign is elected as the sign
of the sum of the trimmed vectors (peft's majority sign, "total"); the merged delta is the mean of the
trimmed entries that agree with the elected sign (zero where none do), scaled by lambda. A task's
part is its agreeing trimmed entries over the number that agree, so the parts sum to that mean."""

from __future__ import annotations

import torch
from peft.utils.merge_utils import calculate_majority_sign_mask

from lsmn_core.merges.method import MergeMethod, Recipe


def magnitude_level(delta: torch.Tensor, density: float) -> float:
    """The magnitude of the k-th largest entry, k = int(density x n) as peft's trim counts it: entries
    at least this large are kept (every entry when k is the whole tensor, none when k is 0)."""
    k = int(density * delta.numel())
    if k >= delta.numel():
        return 0.0
    if k == 0:
        return float("inf")
    return float(delta.abs().flatten().float().kthvalue(delta.numel() - k + 1).values)


def elected_parts(kept: torch.Tensor) -> torch.Tensor:
    """TIES's elect and disjoint mean over already trimmed (or dropped) vectors [T, ...]: each task's
    entries that agree with the elected sign, over how many agree."""
    agree = calculate_majority_sign_mask(kept, method="total")
    return kept * agree / agree.sum(0).clamp(min=1)


class Ties(MergeMethod):
    name = "ties"
    default_lambda = 1.0  # the paper's lambda for its mean of agreeing entries
    uses_density = True

    def level(self, delta: torch.Tensor, recipe: Recipe) -> float:
        return magnitude_level(delta, recipe.density)

    def parts(self, deltas: torch.Tensor, levels, recipe: Recipe, generator) -> torch.Tensor:
        keep = torch.stack([delta.abs() >= level for delta, level in zip(deltas, levels)])
        return elected_parts(deltas * keep)
