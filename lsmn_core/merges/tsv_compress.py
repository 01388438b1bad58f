"""`tsv_c`: "Task Singular Vectors: Reducing Task Interference in Model Merging" (TSV-Compress). Each
task keeps, per 2-D weight, only its top floor(r / T) singular triplets (with `keep`, as many as fit
that share of the weight's numbers: k (m + n + 1) <= keep x m x n) and is evaluated with its own
delta rebuilt from them, U_k diag(s_k) V_k^T: a compression of every task's vector, not a merge. The
triplets are kept in float32 and the delta is always rebuilt from them, so what is evaluated is
exactly what the stored numbers give (`lsmn merge` writes them beside the task's network). Every
other tensor keeps each task's own delta, as the authors' code does (biases and norms are a small
share of the numbers)."""

from __future__ import annotations

import torch

from lsmn_core.merges.matrix import MatrixMerge, per_task_rank, top_triplets
from lsmn_core.merges.method import Compression, Recipe


def kept_rank(name: str, shape: tuple[int, ...], tasks: int, keep: float | None) -> int:
    """How many triplets a task keeps of a weight of `shape`: floor(r / T), or with `keep` as many as
    fit that share of its numbers (at least one; always fewer than r, since k (m + n + 1) <= m n)."""
    m, n = shape
    if keep is None:
        return per_task_rank(name, min(m, n), tasks)
    return max(1, int(keep * m * n) // (m + n + 1))


def rebuilt(stored: dict[str, torch.Tensor]) -> torch.Tensor:
    """A task's delta of one tensor from what it stores: U diag(s) V^T, or the delta itself."""
    if "delta" in stored:
        return stored["delta"]
    return (stored["u"] * stored["s"]) @ stored["vt"]


class TsvCompress(MatrixMerge, Compression):
    name = "tsv_c"
    per_task = True
    uses_keep = True

    def parts(self, deltas: torch.Tensor, levels, recipe: Recipe, generator) -> torch.Tensor:
        return deltas  # each task's own

    def stored(self, name: str, deltas: torch.Tensor, recipe: Recipe) -> list[dict[str, torch.Tensor]]:
        if not self.whole(name, tuple(deltas.shape[1:]), recipe):
            return [{"delta": delta.float()} for delta in deltas]
        k = kept_rank(name, tuple(deltas.shape[1:]), len(deltas), recipe.keep)
        u, s, vt = top_triplets(deltas.float(), k)
        return [{"u": u[t].contiguous(), "s": s[t].contiguous(), "vt": vt[t].contiguous()} for t in range(len(deltas))]

    def stored_shapes(self, name: str, shape: tuple[int, ...], tasks: int,
                      recipe: Recipe) -> dict[str, tuple[int, ...]]:
        if not self.whole(name, shape, recipe):
            return {"delta": shape}
        (m, n), k = shape, kept_rank(name, shape, tasks, recipe.keep)
        return {"u": (m, k), "s": (k,), "vt": (k, n)}

    def from_stored(self, numbers: dict[str, torch.Tensor]) -> torch.Tensor:
        return rebuilt(numbers)

    def whole_parts(self, name: str, deltas: torch.Tensor, recipe: Recipe) -> torch.Tensor:
        return torch.stack([rebuilt(task) for task in self.stored(name, deltas, recipe)])
