"""Hard sharing baseline: one copy of every block, used by every task."""

from dataclasses import dataclass
from typing import Literal

from torch import nn

from lsmn_core.blocks import init_block
from lsmn_core.schemes.base import SharingScheme


@dataclass
class HardOptions:
    kind: Literal["hard"] = "hard"


class Hard(SharingScheme):
    kind = "hard"

    def __init__(self, options, n_tasks, depth, width, hidden):
        super().__init__(options, n_tasks, depth, width, hidden)
        self.blocks = nn.ModuleList(
            nn.ParameterDict({k: nn.Parameter(v) for k, v in init_block(width, hidden).items()})
            for _ in range(depth))

    def block_params(self, layer, tasks):
        return {name: p.unsqueeze(0) for name, p in self.blocks[layer].items()}
