"""Merges that work on each layer's weight matrix rather than on a flat vector ("Task Singular
Vectors: Reducing Task Interference in Model Merging"; "No Task Left Behind: Isotropic Model Merging
with Common and Task-Specific Subspaces"): a 2-D weight's merge comes from singular value
decompositions of its task vectors, read whole; every other tensor (biases, norms, convolutions of
other ranks) and the embedding and output-projection matrices, which these methods were not made
for, take the mean of the task vectors."""

from __future__ import annotations

import abc
from fnmatch import fnmatch

import torch

from lsmn_core.errors import ConfigError
from lsmn_core.merges.method import MergeMethod, Recipe

MEANED = ("*embed*", "*lm_head*", "*wte.*", "*wpe.*")  # 2-D weights that take the mean, by name (wte, wpe: GPT-2's)


def by_singular_vectors(name: str, shape: tuple[int, ...], exclude: list[str] | tuple[str, ...] = ()) -> bool:
    """Whether a weight is one these methods merge by its SVDs: 2-D, and neither an embedding nor an
    output projection nor matched by `exclude` (fnmatch patterns of parameter names)."""
    return len(shape) == 2 and not any(fnmatch(name, pattern) for pattern in (*MEANED, *exclude))


def polar(matrix: torch.Tensor) -> torch.Tensor:
    """The matrix with orthonormal columns (or rows) nearest to `matrix`: P Q^T from its SVD P D Q^T."""
    p, _, qt = torch.linalg.svd(matrix, full_matrices=False)
    return p @ qt


def top_triplets(delta: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k largest singular triplets of a matrix [m, n] or of each of a stack [T, m, n]: U [..., m, k],
    s [..., k], V^T [..., k, n] (a stack's SVDs taken in one batched call)."""
    u, s, vt = torch.linalg.svd(delta, full_matrices=False)
    return u[..., :k], s[..., :k], vt[..., :k, :]


def per_task_rank(name: str, rank: int, tasks: int) -> int:
    """floor(r / T), each task's share of a weight's r singular directions (refused when 0)."""
    if tasks > rank:
        raise ConfigError(f"{name}: {tasks} tasks but its smaller side is {rank}: no singular direction is left "
                          "for each task (merge it by the mean with an exclude pattern, or merge fewer tasks)")
    return rank // tasks


def equal_shares(merged: torch.Tensor, tasks: int) -> torch.Tensor:
    """Parts [T, m, n] of a merge that is not a sum of one part per task: each an equal share of it (so
    per-task coefficients scale it by their mean)."""
    return (merged / tasks).expand(tasks, *merged.shape)


class MatrixMerge(MergeMethod):
    """A method whose 2-D weights are merged whole (`whole_parts`); other tensors take the mean."""

    default_lambda = 1.0  # the authors' released merges add the merged delta as it is

    def whole(self, name: str, shape: tuple[int, ...], recipe: Recipe) -> bool:
        """Whether tensor `name` is merged from all of its vectors at once (`whole_parts`), not in chunks."""
        return by_singular_vectors(name, shape, recipe.exclude)

    def parts(self, deltas: torch.Tensor, levels, recipe: Recipe, generator) -> torch.Tensor:
        return deltas / len(deltas)  # the parts sum to the mean

    @abc.abstractmethod
    def whole_parts(self, name: str, deltas: torch.Tensor, recipe: Recipe) -> torch.Tensor:
        """Each task's part [T, m, n] of a 2-D weight's merged delta, from its vectors [T, m, n] (float32
        here: the SVDs of a float16 or bfloat16 checkpoint's vectors are never taken in its own dtype)."""
