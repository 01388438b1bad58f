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
    """The matrix with orthonormal columns (or rows) nearest to `matrix`, P Q^T of its SVD P D Q^T:
    here X (X^T X)^(-1/2) (or (X X^T)^(-1/2) X), from the eigendecomposition of the smaller side's Gram
    matrix in float64 (under half the SVD's time for a 384 x 1536 matrix), directions of no length
    (under 1e-6 of the longest) left out rather than given an arbitrary one."""
    x = matrix.double()
    tall = x.shape[0] >= x.shape[1]
    values, vectors = torch.linalg.eigh(x.T @ x if tall else x @ x.T)
    kept = values > values[-1] * 1e-12
    inverse_root = (vectors[:, kept] / values[kept].sqrt()) @ vectors[:, kept].T
    return (x @ inverse_root if tall else inverse_root @ x).to(matrix.dtype)


def top_triplets(delta: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k largest singular triplets of a matrix [m, n] or of each of a stack [T, m, n]: U [..., m, k],
    s [..., k], V^T [..., k, n] (a stack's in one batched call)."""
    u, s, vt = stack_triplets(delta if delta.dim() == 3 else delta.unsqueeze(0), k)
    return (u, s, vt) if delta.dim() == 3 else (u[0], s[0], vt[0])


GRAM_FLOOR = 1e-2  # the smallest kept singular value, as a share of the largest, that the Gram route resolves


def stack_triplets(stack: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top k triplets of each matrix of a stack [B, m, n]. For k up to half the smaller side r:
    the top 2k eigenvectors of the smaller side's Gram matrix (an r x r eigenproblem, a fraction of
    an SVD's time for a wide matrix) span the top k directions with room to spare, and the matrix
    projected on them gives the triplets by a 2k x 2k eigenproblem in float64 (Rayleigh-Ritz): as
    precise as an SVD in float32, both sides orthonormal. A full SVD past half of r, or where a kept
    singular value is under GRAM_FLOOR of the largest (a matrix of lower rank, or of zeros), which
    the Gram's squared values would not resolve."""
    m, n = stack.shape[-2:]
    if m > n:
        u, s, vt = stack_triplets(stack.mT, k)
        return vt.mT, s, u.mT
    if 2 * k <= m and len(stack):
        basis = torch.linalg.eigh(stack @ stack.mT)[1][..., -2 * k:]
        projected = (basis.mT @ stack).double()
        values, vectors = torch.linalg.eigh(projected @ projected.mT)
        s, vectors = values[:, -k:].flip(-1).clamp_min(0).sqrt(), vectors[..., -k:].flip(-1)
        if not (s[:, -1] <= GRAM_FLOOR * s[:, 0]).any():
            vt = (vectors.mT @ projected) / s.unsqueeze(-1)
            return basis @ vectors.to(stack.dtype), s.to(stack.dtype), vt.to(stack.dtype)
    u, s, vt = torch.linalg.svd(stack, full_matrices=False)
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
