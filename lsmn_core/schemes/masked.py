"""Per-task masks over the prunable weights, shared by the masked schemes (sparse, mann).

Masks are bool buffers [T, *weight.shape], one per prunable weight, so every task's masked weights
stack along a task axis and all tasks run in one batched matmul.
"""

import torch

from lsmn_core.blocks import block_index
from lsmn_core.schemes.base import IsometricScheme


class MaskedScheme(IsometricScheme):
    def register_masks(self) -> None:
        """Call once the parameters exist: one all-True mask per prunable weight."""
        for name, p in self.named_parameters():
            if self.prunable(name):
                self.register_buffer(self._buffer(name), torch.ones((self.n_tasks, *p.shape), dtype=torch.bool),
                                     persistent=False)

    @staticmethod
    def _buffer(name: str) -> str:
        return "mask__" + name.replace(".", "__")

    def mask_of(self, name: str) -> torch.Tensor:
        return getattr(self, self._buffer(name))

    def masks(self):
        return {name: self.mask_of(name) for name, _ in self.named_parameters() if self.prunable(name)}

    def set_task_masks(self, task: int, masks: dict[str, torch.Tensor]) -> None:
        for name, mask in masks.items():
            self.mask_of(name)[task] = mask

    def density(self):
        kept = torch.zeros(self.n_tasks, self.depth)
        total = torch.zeros(self.depth)
        for name, m in self.masks().items():
            layer = block_index(name)
            kept[:, layer] += m.flatten(1).sum(1).cpu()
            total[layer] += m[0].numel()
        return kept / total

    def load_routing(self, state):
        for name, mask in state["masks"].items():
            self.mask_of(name).copy_(mask)
