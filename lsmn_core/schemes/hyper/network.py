"""The model of the hyper scheme (MUiR): every task its own network (its config's `architecture`),
whose weight blocks the scheme generates from hypermodules shared by all tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from lsmn_core.network.model import MultitaskModel
from lsmn_core.data.tasks import TaskSpec

if TYPE_CHECKING:
    from lsmn_core.schemes.hyper.architectures import TaskNetworks


class HyperNet(MultitaskModel):
    body: TaskNetworks

    def __init__(self, specs: list[TaskSpec], body: TaskNetworks):
        super().__init__(specs)
        self.body = body

    def forward_tasks(self, x: torch.Tensor, tasks: list[str | int] | None = None) -> list[torch.Tensor]:
        indices = [self.task_index(t) for t in (tasks if tasks is not None else range(len(self.specs)))]
        return self.body.run(x, indices)

    def usage(self, task: int) -> dict[str, torch.Tensor]:
        return {f"body.{n}": u for n, u in self.body.usage(task).items()}

    def module_count(self, task: int) -> int:
        return len(self.body.layers[task])

    def forward_tapped(self, x: torch.Tensor, task: int, taps: nn.ModuleList) -> torch.Tensor:
        """The taps see each layer of the task's own network."""
        return self.body.run(x, [task], taps)[0]
