"""Single-task baseline: every task has its own copy of every block (and its own encoder)."""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lsmn_core.blocks import init_block
from lsmn_core.schemes.base import SharingScheme


@dataclass
class IndependentOptions:
    kind: Literal["independent"] = "independent"


class Independent(SharingScheme):
    kind = "independent"
    per_task_encoders = True

    def __init__(self, options, n_tasks, depth, width, hidden):
        super().__init__(options, n_tasks, depth, width, hidden)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            copies = [init_block(width, hidden) for _ in range(n_tasks)]
            self.blocks.append(nn.ParameterDict(
                {name: nn.Parameter(torch.stack([c[name] for c in copies])) for name in copies[0]}))

    def block_params(self, layer, tasks):
        return {name: p[tasks] for name, p in self.blocks[layer].items()}

    def usage(self, task):
        return {name: self.task_rows(task, p) for name, p in self.named_parameters()}

    def update_masks(self, task):
        return self.usage(task)
