"""Soft sharing, one of the baselines the slides "Learning Sparse Sharing Architectures for Multiple
Tasks" set against sparse sharing: every task has a network of its own, and cross-stitch units
("Cross-stitch Networks for Multi-task Learning", Misra et al. 2016) let each network read the
others' activations. After block l, task t's column becomes sum_s alpha[l, t, s] * h_s, with alpha
learned and started near the identity (self_weight on the diagonal, the rest spread evenly).

So every task's column runs on every sample, and a task's output depends on every column's weights:
all of them are the task's active parameters, which is why the slides call soft sharing
parameter-inefficient. The columns start after the encoders, which tasks of one input kind share
as under hard sharing. The cost of a forward grows as the number of tasks squared, so runs are
limited to MAX_TASKS tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lsmn_core.errors import ConfigError
from lsmn_core.options import check
from lsmn_core.schemes.base import IsometricScheme

MAX_TASKS = 64  # a forward runs tasks x tasks columns


@dataclass
class SoftOptions:
    kind: Literal["soft"] = "soft"
    self_weight: float = check(lambda v: 0 <= v <= 1, "must be in 0 .. 1", 0.9)  # alpha_tt at the start
    # the cross-stitch paper trains its units at a larger rate than the networks (1e2 to 1e3 times
    # under SGD); under AdamW, whose steps do not scale with the gradient, 10 moves them as fast
    stitch_lr_scale: float = check(lambda v: v > 0, "must be > 0", 10.0)


class Soft(IsometricScheme):
    kind = "soft"
    options_class = SoftOptions
    baseline = True

    def __init__(self, options, n_tasks, depth, block):
        super().__init__(options, n_tasks, depth, block)
        self.blocks = nn.ModuleList(block.stacked(n_tasks) for _ in range(depth))
        other = (1 - options.self_weight) / (n_tasks - 1) if n_tasks > 1 else 0.0
        start = torch.full((n_tasks, n_tasks), other)
        start.fill_diagonal_(options.self_weight if n_tasks > 1 else 1.0)
        self.stitches = nn.Parameter(start.repeat(depth, 1, 1))  # [depth, T (reader), T (read)]

    @classmethod
    def check_config(cls, config) -> None:
        if len(config.tasks) > MAX_TASKS:
            raise ConfigError(f"scheme: soft sharing runs every task's network on every sample, so its cost grows "
                              f"as the tasks squared; it takes at most {MAX_TASKS} tasks, not {len(config.tasks)}")

    def block_params(self, layer, tasks):
        return {name: p.index_select(0, tasks) for name, p in self.blocks[layer].items()}

    def forward(self, h, tasks, padding=None, taps=None):
        """Row i (task tasks[i]'s samples) runs through every task's column, stitched after each block;
        its output is its own task's column. `taps` see the task's own column's block updates."""
        rows, n = h.shape[0], self.n_tasks
        columns = torch.arange(n, device=h.device).repeat(rows)
        x = h.repeat_interleave(n, dim=0)  # [rows * T, B, *activation], row-major over (row, column)
        pad = None if padding is None else padding.repeat_interleave(n, dim=0)
        for layer in range(self.depth):
            update = self.block.branch(x, self.block_params(layer, columns), pad)
            if taps is not None:
                own = int(tasks[0])
                update = torch.cat([update[:own], taps[layer](update[own]).unsqueeze(0), update[own + 1:]])
            x = self.stitch(x + update, layer, rows)
        return x.view(rows, n, *x.shape[1:])[torch.arange(rows, device=h.device), tasks]

    def stitch(self, x: torch.Tensor, layer: int, rows: int) -> torch.Tensor:
        """Each column replaced by its row's columns mixed by the layer's cross-stitch units."""
        by_row = x.reshape(rows, self.n_tasks, -1)
        mixed = torch.einsum("ts,rsf->rtf", self.stitches[layer].to(x.dtype), by_row)
        return mixed.reshape(x.shape)

    def lr_scales(self):
        return {"stitches": self.options.stitch_lr_scale}

    def density(self):
        """Every block of every column reaches each task's output (through the stitches)."""
        return torch.ones(self.n_tasks, self.depth)

    def routing_summary(self, task_names):
        """Per task and layer, the weight its column gives each task's column (its own included)."""
        weights = self.stitches.detach().cpu()
        return {"stitches": {t: {s: [round(float(weights[layer, i, j]), 4) for layer in range(self.depth)]
                                 for j, s in enumerate(task_names)} for i, t in enumerate(task_names)}}
