"""Sparse sharing, after the slides "Learning Sparse Sharing Architectures for Multiple Tasks": one
base body; task t uses theta * M_t, and the masks of different tasks may overlap.

Masks come from iterative magnitude pruning with rewinding (imp.py beside this file); the masked
body they act through is lsmn_core.schemes.masked. On a pretrained checkpoint (pretrained.py), each
task's mask over the target weights, by IMP rewound to the pretrained values, or learned (Piggyback).
"""

from dataclasses import dataclass
from typing import Literal

from lsmn_core.errors import ConfigError
from lsmn_core.options import check
from lsmn_core.schemes.masked import MaskedScheme
from lsmn_core.schemes.sparse.imp import find_subnetworks
from lsmn_core.schemes.sparse.pretrained import SparseTargets


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
    # on a pretrained checkpoint: masks by magnitude pruning, or learned (Piggyback: scores thresholded at
    # `threshold`, starting at `score_init`, learned for mask_steps per task at train.lr * score_lr_scale)
    masks: Literal["magnitude", "learned"] = "magnitude"
    threshold: float = check(lambda v: v > 0, "must be > 0", 5e-3)
    score_init: float = check(lambda v: v > 0, "must be > 0", 1e-2)
    score_lr_scale: float = check(lambda v: v > 0, "must be > 0", 0.05)
    mask_steps: int = check(lambda v: 0 < v <= 10**9, "must be in 1 .. 1,000,000,000", 1000)


class Sparse(MaskedScheme):
    kind = "sparse"
    on_checkpoint = SparseTargets
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

    @classmethod
    def check_config(cls, config) -> None:
        if config.scheme.masks == "learned" and config.model.pretrained is None:
            raise ConfigError("scheme.masks: learned masks (Piggyback) are for a pretrained network (model.pretrained)")

    def search_routing(self, session):
        return find_subnetworks(session, self)
