"""`tsv_m`: "Task Singular Vectors: Reducing Task Interference in Model Merging" (TSV-Merge). Per 2-D
weight, each task keeps its top floor(r / T) singular triplets, placed in its own slots of U (m x r),
s (r) and V^T (r x n); U and V^T are each replaced by their polar factor, the orthonormal matrix
nearest to them, which removes the interference between tasks' singular directions; the merged
delta is U diag(s) V^T with the singular values as they were. A task's part is its slots' share."""

from __future__ import annotations

import torch

from lsmn_core.merges.matrix import MatrixMerge, per_task_rank, polar, top_triplets
from lsmn_core.merges.method import Recipe


def task_singular_vectors(name: str, deltas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The tasks' top floor(r / T) triplets side by side: U [m, r], s [r], V^T [r, n] (slots past T x k
    stay zero), and k."""
    tasks, m, n = deltas.shape
    rank = min(m, n)
    k = per_task_rank(name, rank, tasks)
    u, s, vt = deltas.new_zeros(m, rank), deltas.new_zeros(rank), deltas.new_zeros(rank, n)
    each_u, each_s, each_vt = top_triplets(deltas, k)
    u[:, :tasks * k] = each_u.permute(1, 0, 2).reshape(m, tasks * k)
    s[:tasks * k], vt[:tasks * k] = each_s.reshape(-1), each_vt.reshape(tasks * k, n)
    return u, s, vt, k


class TsvMerge(MatrixMerge):
    name = "tsv_m"

    def whole_parts(self, name: str, deltas: torch.Tensor, recipe: Recipe) -> torch.Tensor:
        u, s, vt, k = task_singular_vectors(name, deltas)
        u, vt = polar(u), polar(vt)
        return torch.stack([u[:, t * k:(t + 1) * k] @ torch.diag(s[t * k:(t + 1) * k]) @ vt[t * k:(t + 1) * k]
                            for t in range(len(deltas))])
