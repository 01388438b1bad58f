"""MUiR on a body of blocks (scheme.network: body): every task has its own copy of each block, and
every weight of that copy that divides into m x n blocks is generated from the shared hypermodules,
so the hyper scheme runs on any block (mlp, conv, attention, a user's module) between the shared
encoders and the task heads. The block's other parameters (biases, norms, depthwise kernels whose
single input channel does not divide) stay with their task."""

from __future__ import annotations

import torch
from torch import nn

from lsmn_core.schemes.base import IsometricScheme
from lsmn_core.schemes.hyper.hypermodules import Hypermodules, assemble


class HyperBody(Hypermodules, IsometricScheme):
    def __init__(self, options, n_tasks, depth, block):
        super().__init__(options, n_tasks, depth, block)
        m, n = options.block
        shapes = block.shapes
        self.built = [name for name, s in shapes.items() if len(s) >= 2 and s[0] % m == 0 and s[1] % n == 0]
        self.own = nn.ModuleList()  # per layer: the block's parameters that are not built, stacked [T, ...]
        for _ in range(depth):
            copies = block.stacked(n_tasks)
            self.own.append(nn.ParameterDict({k: p for k, p in copies.items() if k not in self.built}))
        weights = [tuple(shapes[name]) for _ in range(depth) for name in self.built]
        slots = self.share([weights] * n_tasks)[0]  # every task's locations are laid out alike
        self.per_task = self.task_start[1]
        self.layer_slots = [dict(zip(self.built, slots[layer * len(self.built):(layer + 1) * len(self.built)]))
                            for layer in range(depth)]

    def block_params(self, layer, tasks):
        m, n = self.options.block
        params = {name: p.index_select(0, tasks) for name, p in self.own[layer].items()}
        slots = self.layer_slots[layer]
        first, count = next(iter(slots.values()))[0], sum(c for _, c in slots.values())
        offsets = torch.arange(first, first + count, device=tasks.device)
        blocks = self.blocks((tasks[:, None] * self.per_task + offsets).reshape(-1)).view(len(tasks), count, m, n)
        for name, (offset, size) in slots.items():
            params[name] = assemble(blocks[:, offset - first:offset - first + size], self.block.shapes[name])
        return params

    def usage(self, task):
        used = super().usage(task)
        used.update({f"own.{layer}.{name}": self.task_rows(task, p)
                     for layer, own in enumerate(self.own) for name, p in own.items()})
        return used

    def update_masks(self, task):
        """Training one task moves its own contexts and parameters only (the hypermodules are shared)."""
        contexts = torch.zeros_like(self.contexts, dtype=torch.bool)
        contexts[self.task_locations(task)] = True
        return {"contexts": contexts, **{f"own.{layer}.{name}": self.task_rows(task, p)
                                         for layer, own in enumerate(self.own) for name, p in own.items()}}
