"""Hard sharing baseline: one copy of every block, used by every task."""

from dataclasses import dataclass
from typing import Literal

from lsmn_core.schemes.base import IsometricScheme


@dataclass
class HardOptions:
    kind: Literal["hard"] = "hard"


class Hard(IsometricScheme):
    kind = "hard"
    options_class = HardOptions
    baseline = True

    def __init__(self, options, n_tasks, depth, block):
        super().__init__(options, n_tasks, depth, block)
        self.blocks = block.shared(depth)

    def block_params(self, layer, tasks):
        return {name: p.unsqueeze(0) for name, p in self.blocks[layer].items()}
