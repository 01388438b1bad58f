"""Sparse sharing, after the slides "Learning Sparse Sharing Architectures for Multiple Tasks": one
base body; task t uses theta * M_t, and the masks of different tasks may overlap.

Masks come from iterative magnitude pruning with rewinding (imp.py beside this file); the masked
body they act through is lsmn_core.schemes.masked.
"""

from dataclasses import dataclass
from typing import Literal

from lsmn_core.options import check
from lsmn_core.schemes.masked import MaskedScheme
from lsmn_core.schemes.sparse.imp import find_subnetworks


@dataclass
class SparseOptions:
    kind: Literal["sparse"] = "sparse"
    prune_rate: float = check(lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive)", 0.2)  # alpha
    min_density: float = check(lambda v: 0 < v <= 1, "must be in (0, 1]", 0.1)  # S
    round_steps: int = check(lambda v: v > 0, "must be > 0", 300)  # k: steps per pruning round
    warmup_steps: int = check(lambda v: v >= 0, "must be >= 0", 0)  # multi-task warm-up (MTW)
    # how many tasks' pruning rounds train side by side (each holds a copy of the body meanwhile)
    tasks_at_once: int = check(lambda v: v > 0, "must be > 0", 8)
    # the shared encoders are part of the pruned base network too (the slides' E(x; M_t * theta_E))
    prune_encoders: bool = False


class Sparse(MaskedScheme):
    kind = "sparse"
    options_class = SparseOptions

    def __init__(self, options, n_tasks, depth, block):
        super().__init__(options, n_tasks, depth, block)
        self.blocks = block.shared(depth)
        self.prunes_encoders = options.prune_encoders
        self.register_masks()

    def unmasked(self, p, tasks):
        return p.unsqueeze(0)  # shared by all tasks

    def usage(self, task):
        usage = super().usage(task)
        usage.update(self.task_masks(task))
        return usage

    def update_masks(self, task):
        return self.task_masks(task)

    def search_routing(self, session):
        return find_subnetworks(session, self)
