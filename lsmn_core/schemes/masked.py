"""Per-task masks over the prunable weights of one body: the base of the masked schemes (those
whose tasks see shared weights through their own masks; no scheme owns this module).

Masks are bit-packed buffers [T, ceil(n / 8)], one per prunable weight of n elements, over one
shared weight (1,000 tasks' masks of 10M weights: 1.25 GB, not 10 GB as bool). On a GPU the
step's tasks' masks are unpacked there, every task's masked weights stack along a task axis and
all tasks run in one batched matmul. On a CPU that stack's memory traffic costs more than the
matmuls, so the body runs task by task through MaskedLinear (lsmn bench: masked multitask step),
with the masks unpacked once into floats, kept until they change: on a CPU a multiply by a bool
mask costs about 4x one by a float mask (bool to float on every element).
"""

import abc
from typing import cast

import torch
from torch import nn

from lsmn_core.network.layers import ENCODER_LAYER, mask_layer, stacked_linear
from lsmn_core.network.masked_linear import MaskedLinear
from lsmn_core.schemes.base import IsometricScheme
from lsmn_core.schemes.task_masks import TaskMasks

FLOAT_MASKS_LIMIT = 2**30  # bytes: one weight's masks kept as floats up to this; past it, unpacked per step


class TaskMasked:
    """A shared weight that each task sees through its own mask, for `masked_or_stacked_linear`."""

    def __init__(self, weight: torch.Tensor, masks: torch.Tensor, tasks: list[int]):
        self.weight, self.masks, self.tasks = weight, masks, tasks


def masked_or_stacked_linear(x: torch.Tensor, weight, bias: torch.Tensor) -> torch.Tensor:
    if isinstance(weight, TaskMasked):
        return MaskedLinear.apply(x, weight.weight, bias, weight.masks, weight.tasks)
    return stacked_linear(x, weight, bias)


class MaskedScheme(TaskMasks, IsometricScheme):
    blocks: nn.ModuleList  # the body's blocks, each a ParameterDict of its parameters

    def register_masks(self) -> None:
        """Call once the parameters exist: one all-True mask per prunable weight, bit-packed: a task's
        mask of an n-weight matrix takes ceil(n / 8) bytes of memory [T, ceil(n / 8)]."""
        self.start_masks()
        for name, p in self.named_parameters():
            if self.prunable(name):
                self.register_mask(name, p.shape, [True] * self.n_tasks, mask_layer(name))
        self._float_masks: dict[str, tuple[torch.Tensor, int, torch.Tensor]] = {}

    def adopt_encoders(self, encoders, readers):
        """Where the scheme prunes encoders (prunes_encoders), every weight of two or more dimensions of
        a shared encoder gets masks as the body's weights do: all of it for the tasks that read the
        encoder, none of it for the others. The masks are named 'encoders.<key>.<parameter>'."""
        if not self.prunes_encoders:
            return
        for key, encoder in encoders.items():
            reading = set(readers[key])
            rows = [t in reading for t in range(self.n_tasks)]
            for name, p in encoder.named_parameters():
                if p.dim() >= 2:
                    self.register_mask(f"encoders.{key}.{name}", p.shape, rows, ENCODER_LAYER)

    def encoder_params(self, key, encoder, task):
        """The encoder's parameters with each masked weight multiplied by the task's mask."""
        if not self.prunes_encoders:
            return None
        params = dict(encoder.named_parameters())
        for name, p in params.items():
            full = f"encoders.{key}.{name}"
            if full in self._mask_shapes:
                params[name] = p * self._unpacked(full, self._packed(full)[task : task + 1])[0]
        return params

    def _as_floats(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """Every task's mask of `name` in the weights' dtype, for the CPU path's multiplies; kept
        until the masks change (the packed buffer's version counter moves, or it is replaced)."""
        packed = self._packed(name)
        kept = self._float_masks.get(name)
        if kept is not None and kept[0] is packed and kept[1] == packed._version and kept[2].dtype == dtype:
            return kept[2]
        floats = self.mask_of(name).to(dtype)
        self._float_masks[name] = (packed, packed._version, floats)
        return floats

    @abc.abstractmethod
    def unmasked(self, p: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """A parameter that is not pruned (norms, biases), for `tasks`, with a task axis of len(tasks) or 1."""

    def _params(self, layer, tasks, through_masks) -> dict:
        """Block `layer`'s parameters for `tasks`: each prunable weight as `through_masks(weight, name)`."""
        params = {}
        for name, p in cast(nn.ParameterDict, self.blocks[layer]).items():
            full = f"blocks.{layer}.{name}"
            params[name] = through_masks(p, full) if self.prunable(full) else self.unmasked(p, tasks)
        return params

    def block_params(self, layer, tasks):
        """The prunable weights (shared) through each task's mask (unpacked on the device), stacked per task."""
        return self._params(layer, tasks, lambda p, name: p * self.mask_of(name, tasks))

    def layer_update(self, h, tasks, layer, padding=None):
        if h.is_cuda or not self.block.fast_linear:
            return super().layer_update(h, tasks, layer, padding)
        task_list = tasks.tolist()  # on the CPU: no device to wait for

        def through_masks(p, name):
            if self.n_tasks * p.numel() * p.element_size() <= FLOAT_MASKS_LIMIT:
                return TaskMasked(p, self._as_floats(name, p.dtype), task_list)
            # past the limit: only this step's tasks, unpacked now, as uint8 (2x faster than bool)
            return TaskMasked(p, self.mask_of(name, tasks).view(torch.uint8), list(range(len(task_list))))

        return self.block.branch(h, self._params(layer, tasks, through_masks), linear=masked_or_stacked_linear)
