"""Per-task masks over named weights, bit-packed: one buffer [T, ceil(n / 8)] per weight of n
elements (1,000 tasks' masks of 10M weights: 1.25 GB, not 10 GB as bool), each mask with the layer it
belongs to. The masked schemes of the Studio's body and those over a checkpoint's target weights keep
their masks here."""

from __future__ import annotations

import torch
from torch import nn

from lsmn_core.network import bitmasks


class TaskMasks(nn.Module):
    """A mixin of a SharingScheme: masks by weight name, registered as buffers."""

    n_tasks: int
    depth: int

    def start_masks(self) -> None:
        """Call before the first register_mask."""
        self._mask_shapes: dict[str, torch.Size] = {}
        self.mask_layers: dict[str, int] = {}  # the layer of each mask (reports and editors group by it)

    def register_mask(self, name: str, shape: torch.Size, rows: list[bool], layer: int) -> None:
        """A mask of `shape` per task of weight `name` in `layer`: every weight kept for the tasks whose
        row is True, none for the others."""
        self._mask_shapes[name] = shape
        self.mask_layers[name] = layer
        if torch.empty(0).is_meta:  # a skeleton's masks: a shape, no bits (see bitmasks.unpack)
            packed = torch.empty(len(rows), -(-shape.numel() // 8), dtype=torch.uint8)
        else:
            one_row = {keep: bitmasks.pack(torch.full((1, shape.numel()), keep)) for keep in set(rows)}  # packed once
            packed = (one_row[rows[0]].repeat(len(rows), 1) if len(one_row) == 1
                      else torch.cat([one_row[k] for k in rows]))
        self.register_buffer(self._buffer(name), packed, persistent=False)

    @staticmethod
    def _buffer(name: str) -> str:
        return "mask__" + name.replace(".", "__")

    def _packed(self, name: str) -> torch.Tensor:
        return getattr(self, self._buffer(name))

    def mask_of(self, name: str, tasks: torch.Tensor | None = None) -> torch.Tensor:
        """The bool masks of weight `name`, [T, *shape] (or those of `tasks`), unpacked: a copy;
        masks change through set_task_masks and load_routing."""
        return self._unpacked(name, self._packed(name) if tasks is None else self._packed(name).index_select(0, tasks))

    def _unpacked(self, name: str, packed: torch.Tensor) -> torch.Tensor:
        shape = self._mask_shapes[name]
        return bitmasks.unpack(packed, shape.numel()).view(len(packed), *shape)

    def task_masks(self, task: int) -> dict[str, torch.Tensor]:
        """One task's bool mask of every prunable weight (read every training step: a slice, no index
        tensor to send to the device)."""
        return {name: self._unpacked(name, self._packed(name)[task : task + 1])[0] for name in self._mask_shapes}

    def masks(self):
        return {name: self.mask_of(name) for name in self._mask_shapes}

    def set_task_masks(self, task: int, masks: dict[str, torch.Tensor]) -> None:
        for name, mask in masks.items():
            self._packed(name)[task] = bitmasks.pack(mask.flatten().to(self._packed(name).device))

    def density(self):
        """[T, depth]: the share of each layer's masked weights each task keeps (a weight outside the
        layers, an encoder's, has its density in the overlap report)."""
        kept = torch.zeros(self.n_tasks, self.depth)
        total = torch.zeros(self.depth)
        for name, m in self.masks().items():
            layer = self.mask_layers[name]
            if 0 <= layer < self.depth:
                kept[:, layer] += m.flatten(1).sum(1).cpu()
                total[layer] += m[0].numel()
        return kept / total.clamp_min(1)

    def inherit_routing(self, parent):
        for task in range(parent.n_tasks):
            self.set_task_masks(task, parent.task_masks(task))

    def set_masks(self, name: str, masks: torch.Tensor) -> None:
        """Every task's mask [T, *shape] of weight `name`."""
        self._packed(name).copy_(bitmasks.pack(masks.flatten(1).to(self._packed(name).device)))

    def load_routing(self, state):
        for name, mask in state["masks"].items():
            self.set_masks(name, torch.as_tensor(mask))
