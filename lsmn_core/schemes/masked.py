"""Per-task masks over the prunable weights, shared by the masked schemes (sparse, mann).

Masks are bool buffers [T, *weight.shape], one per prunable weight, over one shared weight. On a
GPU every task's masked weights stack along a task axis and all tasks run in one batched matmul;
on a CPU that stack's memory traffic costs more than the matmuls, so the body runs task by task
through MaskedLinear (lsmn bench: masked multitask step), with the masks as floats: on a CPU a
multiply by a bool mask costs about 4x one by a float mask (bool to float on every element).
"""

import abc

import torch

from lsmn_core.blocks import block_branch, block_index, stacked_linear
from lsmn_core.masked_linear import MaskedLinear
from lsmn_core.schemes.base import IsometricScheme

FLOAT_MASKS_LIMIT = 2**30  # bytes: one weight's masks as floats up to this, beyond it viewed as uint8


class TaskMasked:
    """A shared weight that each task sees through its own mask, for `masked_or_stacked_linear`."""

    def __init__(self, weight: torch.Tensor, masks: torch.Tensor, tasks: list[int]):
        self.weight, self.masks, self.tasks = weight, masks, tasks


def masked_or_stacked_linear(x: torch.Tensor, weight, bias: torch.Tensor) -> torch.Tensor:
    if isinstance(weight, TaskMasked):
        return MaskedLinear.apply(x, weight.weight, weight.masks, weight.tasks) + bias.unsqueeze(1)
    return stacked_linear(x, weight, bias)


class MaskedScheme(IsometricScheme):
    def register_masks(self) -> None:
        """Call once the parameters exist: one all-True mask per prunable weight."""
        for name, p in self.named_parameters():
            if self.prunable(name):
                self.register_buffer(self._buffer(name), torch.ones((self.n_tasks, *p.shape), dtype=torch.bool),
                                     persistent=False)
        self._float_masks = {}

    def _as_floats(self, masks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`masks` in the weights' dtype, for the CPU path's multiplies; kept until the masks are
        written to (their version counter moves) or replaced (moved to a device). Past the limit, the
        bool masks viewed as uint8, without a copy: as fast where memory traffic bounds the multiply,
        about 1.6x slower where the masks fit in cache, and still 2x faster than bool."""
        if masks.numel() * dtype.itemsize > FLOAT_MASKS_LIMIT:
            return masks.view(torch.uint8)
        source, version, floats = self._float_masks.get(id(masks), (None, None, None))
        if source is not masks or version != masks._version or floats.dtype != dtype:
            floats = masks.to(dtype)
            self._float_masks[id(masks)] = (masks, masks._version, floats)
        return floats

    @staticmethod
    def _buffer(name: str) -> str:
        return "mask__" + name.replace(".", "__")

    def mask_of(self, name: str) -> torch.Tensor:
        return getattr(self, self._buffer(name))

    def masks(self):
        return {name: self.mask_of(name) for name, _ in self.named_parameters() if self.prunable(name)}

    @abc.abstractmethod
    def unmasked(self, p: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """A parameter that is not pruned (norms, biases), for `tasks`, with a task axis of len(tasks) or 1."""

    def _params(self, layer, tasks, through_masks) -> dict:
        """Block `layer`'s parameters for `tasks`: each prunable weight as `through_masks(weight, masks)`."""
        params = {}
        for name, p in self.blocks[layer].items():
            full = f"blocks.{layer}.{name}"
            params[name] = through_masks(p, self.mask_of(full)) if self.prunable(full) else self.unmasked(p, tasks)
        return params

    def block_params(self, layer, tasks):
        """The prunable weights (shared) through each task's mask, stacked per task."""
        return self._params(layer, tasks, lambda p, masks: p * masks.index_select(0, tasks))

    def layer_update(self, h, tasks, layer):
        if h.is_cuda:
            return super().layer_update(h, tasks, layer)
        task_list = tasks.tolist()  # on the CPU: no device to wait for
        params = self._params(layer, tasks, lambda p, masks: TaskMasked(p, self._as_floats(masks, p.dtype), task_list))
        return block_branch(h, params, linear=masked_or_stacked_linear)

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
