"""`iso_c` and `iso_cts`: "No Task Left Behind: Isotropic Model Merging with Common and Task-Specific
Subspaces". Iso-C: per 2-D weight, the SVD of the sum of the task vectors with every singular value
replaced by their mean, so that no direction of the merge dominates the others. Iso-CTS: the top
`common` share (the recipe's, 0.8 by default) of the sum's directions (rounded so that the rest
divides by T), then each task's top directions of what is left of its vector once the common left
space is projected out, in its own slots; polar factors of both sides as in TSV-M, and every
singular value the mean of all of them. Neither merge is a sum of per-task parts: each task's part
is an equal share."""

from __future__ import annotations

import torch

from lsmn_core.merges.matrix import MatrixMerge, equal_shares, per_task_rank, polar, top_triplets
from lsmn_core.merges.method import Recipe


def isotropic(u: torch.Tensor, s: torch.Tensor, vt: torch.Tensor) -> torch.Tensor:
    """U diag(s) V^T with every singular value replaced by their mean."""
    return s.mean() * (u @ vt)


def common_rank(rank: int, tasks: int, common: float) -> int:
    """The common space's size: the `common` share of r, moved so that r minus it divides by T."""
    specific = round((rank - int(rank * common)) / tasks) * tasks
    return rank - specific


class IsoC(MatrixMerge):
    name = "iso_c"

    def whole_parts(self, name: str, deltas: torch.Tensor, recipe: Recipe) -> torch.Tensor:
        u, s, vt = torch.linalg.svd(deltas.sum(0), full_matrices=False)
        return equal_shares(isotropic(u, s, vt), len(deltas))


class IsoCts(MatrixMerge):
    name = "iso_cts"
    uses_common = True

    def whole_parts(self, name: str, deltas: torch.Tensor, recipe: Recipe) -> torch.Tensor:
        tasks, m, n = deltas.shape
        rank = min(m, n)
        per_task_rank(name, rank, tasks)  # refused as TSV-M is, where a task could hold no direction
        common = common_rank(rank, tasks, recipe.common)
        k = (rank - common) // tasks
        u_c, s_c, vt_c = top_triplets(deltas.sum(0), common)
        u_t, s_t, vt_t = top_triplets(deltas - u_c @ (u_c.T @ deltas), k)  # every task's, in one batched call
        u = torch.cat([u_c, u_t.permute(1, 0, 2).reshape(m, tasks * k)], 1)
        s, vt = torch.cat([s_c, s_t.reshape(-1)]), torch.cat([vt_c, vt_t.reshape(tasks * k, n)], 0)
        return equal_shares(isotropic(polar(u), s, polar(vt)), tasks)
