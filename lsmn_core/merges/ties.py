"""`ties`: "TIES-Merging: Resolving Interference When Merging Models". Each task vector is trimmed,
per tensor, to its `density` largest entries by magnitude; each weight's sign is elected as the sign
of the sum of the trimmed vectors (peft's majority sign, "total", which the tests check it against);
the merged delta is the mean of the
trimmed entries that agree with the elected sign (zero where none do), scaled by lambda. A task's
part is its agreeing trimmed entries over the number that agree, so the parts sum to that mean."""

from __future__ import annotations

import numpy as np
import torch

from lsmn_core.merges.method import MergeMethod, Recipe


SAMPLE = 1 << 14  # entries a large tensor's level is first bracketed from
BLOCK = 1 << 18  # entries of a large tensor whose magnitudes are taken at once (1 MB of float32)


def nth_smallest(values: np.ndarray, index: int) -> float:
    """The entry `index` (from 0) of `values` in ascending order, by selection rather than a sort."""
    return float(np.partition(values, index)[index])


def magnitude_level(delta: torch.Tensor, density: float) -> float:
    """The magnitude of the k-th largest entry, k = int(density x n) as peft's trim counts it: entries
    at least this large are kept (every entry when k is the whole tensor, none when k is 0). Exact; on
    a large tensor the rank is first bracketed from an even sample of its entries, so that the exact
    selection runs over the few entries between the brackets (a full selection is 5x slower), found a
    block at a time (the block's magnitudes stay in the cache; no copy of the whole is made). In
    NumPy: its comparisons, counts and compaction are 2-4x faster than torch's on a CPU."""
    n = delta.numel()
    k = int(density * n)
    if k >= n:
        return 0.0
    if k == 0:
        return float("inf")
    values = delta.detach().float().cpu().numpy().ravel()
    if n > 8 * SAMPLE:
        sample = np.abs(values[:: n // SAMPLE])
        share = 1 - k / n  # where the k-th largest sits in ascending order
        margin = 4 * SAMPLE ** -0.5  # a rank's spread in the sample, several times over
        ranks = [min(len(sample), max(1, int(q * len(sample)))) - 1 for q in (share - margin, share + margin)]
        low, high = np.partition(sample, ranks)[ranks]
        above, pieces = 0, []
        for start in range(0, n, BLOCK):
            magnitudes = np.abs(values[start:start + BLOCK])
            above += int(np.count_nonzero(magnitudes > high))
            pieces.append(np.compress((magnitudes >= low) & (magnitudes <= high), magnitudes))
        between = np.concatenate(pieces)
        if above < k <= above + between.size:  # the k-th largest lies between the brackets
            return nth_smallest(between, above + between.size - k)
    return nth_smallest(np.abs(values), n - k)


def trimmed(deltas: torch.Tensor, levels: list[float]) -> torch.Tensor:
    """Each task's entries [T, ...] at least its level in magnitude, the rest zero. Hardshrink keeps
    the entries larger than its bound, so the bound is the number just below the level: one pass per
    task, where a comparison's bool mask and a masked fill take 9 times as long (8 x 262k entries).
    A level of 0 keeps every entry (a copy: no bound below 0 is asked of hardshrink)."""
    out = torch.empty_like(deltas)
    below = torch.tensor(-float("inf"), dtype=deltas.dtype)
    for row, delta, level in zip(out, deltas, levels):
        if level <= 0:
            row.copy_(delta)
        else:
            torch.hardshrink(delta, float(torch.nextafter(torch.tensor(level, dtype=deltas.dtype), below)), out=row)
    return out


def elected_parts(kept: torch.Tensor) -> torch.Tensor:
    """TIES's elect and disjoint mean over already trimmed (or dropped) vectors [T, ...], which it
    overwrites: each task's entries that agree with the elected sign, over how many agree. In place
    and in float arithmetic: every new tensor of this size is fresh memory, and bool masks are slow.
    A sum of -0 (elected negative) has only zero terms, and a zero agrees with neither sign."""
    sign = torch.ones_like(kept[0]).copysign_(kept.sum(0))
    agreeing = kept.mul_(sign).relu_()  # an agreeing entry's magnitude, zero elsewhere
    count = agreeing.sign().sum(0).clamp_(min=1)
    return agreeing.div_(count).mul_(sign)


class Ties(MergeMethod):
    name = "ties"
    default_lambda = 1.0  # the paper's lambda for its mean of agreeing entries
    uses_density = True
    needs_level = True

    def level(self, delta: torch.Tensor, recipe: Recipe) -> float:
        return magnitude_level(delta, recipe.density)

    def parts(self, deltas: torch.Tensor, levels, recipe: Recipe, generator) -> torch.Tensor:
        return elected_parts(trimmed(deltas, levels))
