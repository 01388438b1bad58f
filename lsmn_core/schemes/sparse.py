"""Sparse sharing (seed 003): one base body; task t uses theta * M_t, masks may overlap.

Masks come from iterative magnitude pruning with rewinding (lsmn_core.pruning). They are held as
one bool tensor [T, *weight.shape] per prunable weight, so all tasks run in one batched matmul.
"""

from dataclasses import dataclass
from typing import Literal

import torch

from lsmn_core.config import check
from lsmn_core.schemes.hard import Hard


@dataclass
class SparseOptions:
    kind: Literal["sparse"] = "sparse"
    prune_rate: float = check(lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive)", 0.2)  # alpha
    min_density: float = check(lambda v: 0 < v <= 1, "must be in (0, 1]", 0.1)  # S
    round_steps: int = check(lambda v: v > 0, "must be > 0", 300)  # k: steps per pruning round
    warmup_steps: int = check(lambda v: v >= 0, "must be >= 0", 0)  # multi-task warm-up (MTW)


class Sparse(Hard):
    kind = "sparse"

    def __init__(self, options, n_tasks, depth, width, hidden):
        super().__init__(options, n_tasks, depth, width, hidden)
        for name, p in self.named_parameters():
            if self.prunable(name):
                self.register_buffer(self._buffer(name), torch.ones((n_tasks, *p.shape), dtype=torch.bool),
                                     persistent=False)

    @staticmethod
    def _buffer(name: str) -> str:
        return "mask__" + name.replace(".", "__")

    def mask_of(self, name: str) -> torch.Tensor:
        return getattr(self, self._buffer(name))

    def block_params(self, layer, tasks):
        params = {}
        for name, p in self.blocks[layer].items():
            full = f"blocks.{layer}.{name}"
            params[name] = p * self.mask_of(full)[tasks] if self.prunable(full) else p.unsqueeze(0)
        return params

    def masks(self):
        return {name: self.mask_of(name) for name, _ in self.named_parameters() if self.prunable(name)}

    def set_task_masks(self, task: int, masks: dict[str, torch.Tensor]) -> None:
        for name, mask in masks.items():
            self.mask_of(name)[task] = mask

    def usage(self, task):
        usage = super().usage(task)
        usage.update({name: m[task].clone() for name, m in self.masks().items()})
        return usage

    def update_masks(self, task):
        return {name: m[task] for name, m in self.masks().items()}

    def density(self):
        kept = torch.zeros(self.n_tasks, self.depth)
        total = torch.zeros(self.depth)
        for name, m in self.masks().items():
            layer = int(name.split(".")[1])
            kept[:, layer] += m.flatten(1).sum(1).cpu()
            total[layer] += m[0].numel()
        return kept / total

    def search_routing(self, session):
        from lsmn_core.pruning import find_subnetworks

        return find_subnetworks(session, self.options)

    def load_routing(self, state):
        for name, mask in state["masks"].items():
            self.mask_of(name).copy_(mask)
