"""`task_arithmetic`: "Editing Models with Task Arithmetic": the pretrained weights plus lambda times
the sum of the task vectors."""

from __future__ import annotations

import torch

from lsmn_core.merges.method import MergeMethod, Recipe


class TaskArithmetic(MergeMethod):
    name = "task_arithmetic"
    default_lambda = 0.3  # the paper picks lambda on held-out data; 0.3 - 0.4 is what it picks for 8 tasks

    def parts(self, deltas: torch.Tensor, levels, recipe: Recipe, generator) -> torch.Tensor:
        return deltas
