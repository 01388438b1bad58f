"""Single-task baseline: every task has its own copy of every block (and its own encoder)."""

from dataclasses import dataclass
from typing import Literal

from torch import nn

from lsmn_core.schemes.base import IsometricScheme


@dataclass
class IndependentOptions:
    kind: Literal["independent"] = "independent"


class Independent(IsometricScheme):
    kind = "independent"
    options_class = IndependentOptions
    per_task_encoders = True
    baseline = True

    def __init__(self, options, n_tasks, depth, block):
        super().__init__(options, n_tasks, depth, block)
        self.blocks = nn.ModuleList(block.stacked(n_tasks) for _ in range(depth))

    def block_params(self, layer, tasks):
        # index_select: a faster backward than p[tasks]
        return {name: p.index_select(0, tasks) for name, p in self.blocks[layer].items()}

    def usage(self, task):
        return {name: self.task_rows(task, p) for name, p in self.named_parameters()}

    def update_masks(self, task):
        return self.usage(task)
