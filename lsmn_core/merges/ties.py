"""`ties`: "TIES-Merging: Resolving Interference When Merging Models". Each task vector is trimmed,
per tensor, to its `density` largest entries by magnitude; each weight's sign is elected as the sign
of the sum of the trimmed vectors (peft's majority sign, "total", which the tests check it against);
the merged delta is the mean of the
trimmed entries that agree with the elected sign (zero where none do), scaled by lambda. A task's
part is its agreeing trimmed entries over the number that agree, so the parts sum to that mean."""

from __future__ import annotations

import torch

from lsmn_core.merges.method import MergeMethod, Recipe


SAMPLE = 1 << 14  # entries a large tensor's level is first bracketed from


def magnitude_level(delta: torch.Tensor, density: float) -> float:
    """The magnitude of the k-th largest entry, k = int(density x n) as peft's trim counts it: entries
    at least this large are kept (every entry when k is the whole tensor, none when k is 0). Exact; on
    a large tensor the rank is first bracketed from an even sample of its entries, so that the exact
    selection runs over the few entries between the brackets (a full selection is 5x slower)."""
    n = delta.numel()
    k = int(density * n)
    if k >= n:
        return 0.0
    if k == 0:
        return float("inf")
    magnitudes = delta.detach().abs().flatten().float()
    if n > 8 * SAMPLE:
        sample = magnitudes[:: n // SAMPLE]
        share = 1 - k / n  # where the k-th largest sits in ascending order
        margin = 4 * SAMPLE ** -0.5  # a rank's spread in the sample, several times over
        low, high = (float(sample.kthvalue(min(len(sample), max(1, int(q * len(sample))))).values)
                     for q in (share - margin, share + margin))
        above = int(torch.count_nonzero(magnitudes > high))  # a bool tensor's sum() is 20x slower
        between = magnitudes[(magnitudes >= low) & (magnitudes <= high)]
        if above < k <= above + between.numel():  # the k-th largest lies between the brackets
            return float(between.kthvalue(above + between.numel() - k + 1).values)
    return float(magnitudes.kthvalue(n - k + 1).values)


def elected_parts(kept: torch.Tensor) -> torch.Tensor:
    """TIES's elect and disjoint mean over already trimmed (or dropped) vectors [T, ...], which it
    overwrites: each task's entries that agree with the elected sign, over how many agree. In place,
    with counts of bytes: every new tensor of this size is fresh memory, and a bool's sum is slow."""
    agree = kept * torch.where(kept.sum(0) >= 0, 1.0, -1.0) > 0  # a zero entry agrees with neither sign
    count = agree.view(torch.uint8).sum(0, dtype=torch.int32).clamp_(min=1)
    return kept.masked_fill_(~agree, 0).div_(count)


class Ties(MergeMethod):
    name = "ties"
    default_lambda = 1.0  # the paper's lambda for its mean of agreeing entries
    uses_density = True
    needs_level = True

    def level(self, delta: torch.Tensor, recipe: Recipe) -> float:
        return magnitude_level(delta, recipe.density)

    def parts(self, deltas: torch.Tensor, levels, recipe: Recipe, generator) -> torch.Tensor:
        levels = torch.tensor(levels, dtype=deltas.dtype).view(-1, *[1] * (deltas.dim() - 1))
        return elected_parts(deltas.masked_fill(deltas.abs() < levels, 0))
