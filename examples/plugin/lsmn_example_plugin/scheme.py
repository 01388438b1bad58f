"""A sharing scheme: a SharingScheme class whose `kind` is the name it is registered as and whose
`options_class` is the dataclass built from the config's `scheme:` mapping. An IsometricScheme
answers one question, "block l's parameters for these tasks" (`block_params`); the rest of the
interface (lsmn_core/schemes/base.py) is optional: usage for parameter counts, update masks, a
routing document the app can edit, the routing parameters a fine-tune trains alone, a report for
`lsmn show`.

`task_gains`: hard sharing (one body for all tasks) with a learned gain per task and block on each
block's residual update. The gains are the routing: a gain near 0 means the task skips the block.

    scheme: {kind: task_gains}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lsmn_core.errors import RoutingError
from lsmn_core.schemes.base import IsometricScheme, RoutingReport


@dataclass
class TaskGainsOptions:
    kind: Literal["task_gains"] = "task_gains"


class TaskGains(IsometricScheme):
    kind = "task_gains"
    options_class = TaskGainsOptions

    def __init__(self, options, n_tasks, depth, block):
        super().__init__(options, n_tasks, depth, block)
        self.blocks = block.shared(depth)
        self.gain = nn.Parameter(torch.ones(n_tasks, depth))

    def block_params(self, layer, tasks):
        return {name: p.unsqueeze(0) for name, p in self.blocks[layer].items()}

    def layer_update(self, h, tasks, layer, padding=None):
        gain = self.gain[tasks, layer].view(-1, *[1] * (h.dim() - 1))
        return super().layer_update(h, tasks, layer, padding) * gain

    def usage(self, task):
        usage = super().usage(task)
        usage["gain"] = self.task_rows(task, self.gain)
        return usage

    def update_masks(self, task):
        return {"gain": self.task_rows(task, self.gain)}

    def routing_parameters(self):
        return ["gain"]

    def routing_document(self, task_names):
        return {"gains": dict(zip(task_names, self.gain.detach().cpu().tolist()))}

    def parse_routing_document(self, doc, task_names):
        gains = doc.get("gains")
        if not isinstance(gains, dict) or set(gains) != set(task_names):
            raise RoutingError(f"routing needs 'gains' for exactly the tasks {task_names}")
        for task in task_names:
            row = gains[task]
            if not (isinstance(row, list) and len(row) == self.depth
                    and all(isinstance(g, (int, float)) and not isinstance(g, bool) and math.isfinite(g)
                            for g in row)):
                raise RoutingError(f"gains of {task}: expected {self.depth} finite numbers")
        return {"gain": torch.tensor([gains[t] for t in task_names], dtype=torch.float32)}

    def load_routing(self, state):
        if "gain" in state:
            with torch.no_grad():
                self.gain.copy_(state["gain"])

    def routing_summary(self, task_names):
        return {"gains": dict(zip(task_names, self.gain.detach().cpu().tolist()))}

    @classmethod
    def routing_report(cls, doc, task_names):
        gains = doc["gains"]
        lines = ["gain per block (a gain near 0: the task skips the block):"]
        lines += [f"  {task:<16}" + " ".join(f"{g:6.2f}" for g in gains[task]) for task in task_names]
        return RoutingReport({"gains": gains}, lines)
