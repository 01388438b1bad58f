"""Every task's rows through a checkpoint in one call: the rows of a batch come grouped by task
(T' groups of equal size), and each target linear layer applies its own task's weight to each group
in one batched product, where running the tasks in turn would call the whole checkpoint T' times on
a few rows each."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def linear_modules(targets, network: nn.Module) -> dict[str, tuple[str, nn.Linear]] | None:
    """The target weights' modules by dotted name (module -> its weight's name, the module), or None
    unless every target is a linear layer's weight."""
    modules: dict[str, tuple[str, nn.Linear]] = {}
    for name in targets:
        module = network.get_submodule(name.removesuffix(".weight")) if name.endswith(".weight") else None
        if not isinstance(module, nn.Linear):
            return None
        modules[name.removesuffix(".weight")] = (name, module)
    return modules


def by_task(x: torch.Tensor, tasks: int) -> torch.Tensor:
    """A layer's input [T' x rows, ..., in] as [T', rows x ..., in]: each task's group of rows."""
    return x.unflatten(0, (tasks, -1)).flatten(1, -2)


def grouped_linear(linear: nn.Linear, weights: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """`linear`'s forward with each group of rows through its own task's weight, `weights` [T', out, in]."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        out = by_task(x, len(weights)) @ weights.transpose(1, 2)
        out = out.reshape(*x.shape[:-1], -1)
        return out if linear.bias is None else out + linear.bias
    return forward
