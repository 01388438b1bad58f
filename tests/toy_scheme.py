"""A sharing scheme defined outside lsmn_core, to prove that adding one touches nothing else: hard
sharing, with a learned gain per task and block on each block's residual update (the routing)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lsmn_core.errors import RoutingError
from lsmn_core.schemes.base import IsometricScheme


@dataclass
class ToyOptions:
    kind: Literal["toy"] = "toy"


class Toy(IsometricScheme):
    kind = "toy"
    options_class = ToyOptions

    def __init__(self, options, n_tasks, depth, block):
        super().__init__(options, n_tasks, depth, block)
        self.blocks = block.shared(depth)
        self.gain = nn.Parameter(torch.ones(n_tasks, depth))

    def block_params(self, layer, tasks):
        return {name: p.unsqueeze(0) for name, p in self.blocks[layer].items()}

    def layer_update(self, h, tasks, layer, padding=None):
        return super().layer_update(h, tasks, layer, padding) * self.gain[tasks, layer][:, None, None]

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
                    and all(isinstance(g, (int, float)) and math.isfinite(g) for g in row)):
                raise RoutingError(f"gains of {task}: expected {self.depth} finite numbers")
        return {"gain": torch.tensor([gains[t] for t in task_names], dtype=torch.float32)}

    def load_routing(self, state):
        if "gain" in state:
            with torch.no_grad():
                self.gain.copy_(state["gain"])
