"""Hard sharing baseline: one copy of every block, used by every task."""

from dataclasses import dataclass
from typing import Literal

from torch import nn

from lsmn_core.blocks import BLOCK_PARAMETERS, stacked_block
from lsmn_core.schemes.base import IsometricScheme


@dataclass
class HardOptions:
    kind: Literal["hard"] = "hard"


def shared_blocks(depth: int, width: int, hidden: int) -> nn.ModuleList:
    """`depth` freshly initialised blocks, one copy each (no task axis)."""
    return nn.ModuleList(stacked_block(1, width, hidden, unstacked=BLOCK_PARAMETERS) for _ in range(depth))


class Hard(IsometricScheme):
    kind = "hard"

    def __init__(self, options, n_tasks, depth, width, hidden):
        super().__init__(options, n_tasks, depth, width, hidden)
        self.blocks = shared_blocks(depth, width, hidden)

    def block_params(self, layer, tasks):
        return {name: p.unsqueeze(0) for name, p in self.blocks[layer].items()}
