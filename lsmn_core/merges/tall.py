"""`tall` and `consensus`: "Localizing Task Information for Improved Model Merging and Compression".
Task t's TALL mask keeps the weights where its own vector outweighs the others': |tau_t| >=
lambda_t |tau_MTL - tau_t|, tau_MTL the sum of the task vectors. `tall` evaluates each task with
that sum under its own mask (lambda 1, as the paper's code applies it; compression: one merged vector
and a bit per weight per task); `consensus` keeps, for every task, the weights that at least k
tasks' masks keep (k = 2 drops the weights only one task needs, and those none does)."""

from __future__ import annotations

import torch

from lsmn_core.merges.method import MergeMethod, Recipe

DEFAULT_TALL_LAMBDA = 0.4  # the middle of the paper's grid (0.2 ... 0.6); a recipe gives one per task


def tall_masks(deltas: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """[T, ...]: where each task's vector outweighs the sum of the others', by its lambda."""
    lambdas = torch.tensor(recipe.tall_lambdas or [DEFAULT_TALL_LAMBDA] * len(deltas), dtype=deltas.dtype)
    others = deltas.sum(0, keepdim=True) - deltas
    return deltas.abs() >= lambdas.view(-1, *[1] * (deltas.dim() - 1)) * others.abs()


class Tall(MergeMethod):
    name = "tall"
    default_lambda = 1.0  # the sum itself: a task's own vector, where its mask keeps it, enters whole
    per_task = True
    uses_tall_lambdas = True

    def parts(self, deltas: torch.Tensor, levels, recipe: Recipe, generator) -> torch.Tensor:
        return deltas

    def masks(self, deltas: torch.Tensor, recipe: Recipe) -> torch.Tensor:
        return tall_masks(deltas, recipe)


class Consensus(MergeMethod):
    name = "consensus"
    default_lambda = 0.3
    uses_tall_lambdas = True

    def parts(self, deltas: torch.Tensor, levels, recipe: Recipe, generator) -> torch.Tensor:
        return deltas

    def masks(self, deltas: torch.Tensor, recipe: Recipe) -> torch.Tensor:
        return (tall_masks(deltas, recipe).sum(0, keepdim=True) >= recipe.consensus_k)
