"""Masks per task over a checkpoint's target weights with one delta of them shared by every task:
task t's value of target W is (W + delta) * M_t. Sparse sharing's subnetworks (IMP) and PackNet's
packed tasks are both of this form; they differ in how the masks are found and in what a task's
training may change."""

from __future__ import annotations

import torch
from torch import nn

from lsmn_core.pretrained.network import Source, TargetScheme
from lsmn_core.schemes.task_masks import TaskMasks


class MaskedDeltas(TaskMasks, TargetScheme):
    """Every task starts with every target weight kept; `deltas`: False where a subclass keeps no
    shared delta (the checkpoint's weights masked alone)."""

    def __init__(self, options, n_tasks: int, source: Source, config, deltas: bool = True):
        super().__init__(options, n_tasks, source, config)
        self.start_masks()
        for name, shape in self.targets.items():
            self.register_mask(name, shape, [True] * n_tasks, self.target_layers[name])
        if deltas:
            self.deltas = nn.ParameterDict({self.key(name): nn.Parameter(torch.zeros(shape))
                                            for name, shape in self.targets.items()})

    def task_weights(self, task, pretrained):
        masks = self.task_masks(task)
        return {name: (pretrained[name] + self.deltas[self.key(name)]) * masks[name] for name in self.targets}

    def usage(self, task):
        usage = super().usage(task)
        masks = self.task_masks(task)
        usage.update({f"deltas.{self.key(name)}": masks[name] for name in self.targets})
        return usage

    def update_masks(self, task):
        masks = self.task_masks(task)
        return {f"deltas.{self.key(name)}": masks[name] for name in self.targets}

    def lr_scales(self):
        return {f"deltas.{key}": self.finetune_lr_scale for key in self.deltas}

    def _device(self) -> torch.device:
        return next(iter(self.buffers())).device
