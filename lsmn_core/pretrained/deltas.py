"""Fine-tuning a checkpoint as deltas over its target weights: `copies` of every target's delta,
each starting at zero (the pretrained network), task t reading copy `copy_of(t)` (its own in a
per-task fine-tune, the one shared copy in a shared one). A run stores the deltas, never the
pretrained weights they are added to."""

from __future__ import annotations

import torch
from torch import nn

from lsmn_core.pretrained.network import Source, TargetScheme


class Deltas(TargetScheme):
    def __init__(self, options, n_tasks: int, source: Source, config, copies: int):
        super().__init__(options, n_tasks, source, config)
        self.copies = copies
        self.deltas = nn.ParameterDict({self.key(name): nn.Parameter(torch.zeros(copies, *shape))
                                        for name, shape in self.targets.items()})

    def copy_of(self, task: int) -> int:
        return task if self.copies > 1 else 0

    def delta(self, task: int, name: str) -> torch.Tensor:
        """Task `task`'s change of target `name`."""
        return self.deltas[self.key(name)][self.copy_of(task)]

    def task_weights(self, task, pretrained):
        return {name: pretrained[name] + self.delta(task, name) for name in self.targets}

    def usage(self, task):
        copy = self.copy_of(task)
        return {name: self.task_rows(copy, p) for name, p in self.named_parameters()}

    def update_masks(self, task):
        return self.usage(task) if self.copies > 1 else {}

    def lr_scales(self):
        return {f"deltas.{key}": self.finetune_lr_scale for key in self.deltas}
