"""Hard sharing baseline: one copy of every block, used by every task; on a pretrained checkpoint,
one fine-tune shared by every task (one delta of every target weight), a head per task."""

from dataclasses import dataclass
from typing import Literal

from lsmn_core.pretrained.deltas import Deltas
from lsmn_core.schemes.base import IsometricScheme


@dataclass
class HardOptions:
    kind: Literal["hard"] = "hard"


class HardDeltas(Deltas):
    """One fine-tune of the checkpoint for every task."""

    kind = "hard"

    def __init__(self, options, n_tasks, source, config):
        super().__init__(options, n_tasks, source, config, copies=1)


class Hard(IsometricScheme):
    kind = "hard"
    options_class = HardOptions
    baseline = True
    on_checkpoint = HardDeltas

    def __init__(self, options, n_tasks, depth, block):
        super().__init__(options, n_tasks, depth, block)
        self.blocks = block.shared(depth)

    def block_params(self, layer, tasks):
        return {name: p.unsqueeze(0) for name, p in self.blocks[layer].items()}
