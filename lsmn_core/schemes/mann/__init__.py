"""Multitask Artificial Neural Network (MANN), after the post "Creating Sparse, Multitask Neural
Networks": disjoint task subnetworks in shared layers.

Each prunable weight is one tensor; each task owns a disjoint mask of it (found by RSN2), and the
masked weights stack along a task axis so all tasks run on a shared input in one batched call.
Biases and norms are per task too, so no parameter of the body serves two tasks: a new task can
be trained on the weights nobody owns while the old tasks' outputs stay bit-identical.

On a pretrained checkpoint, MANN is PackNet (packnet.py beside this file): tasks packed one after
another into the checkpoint's target weights.
"""

from dataclasses import dataclass
from typing import Literal

from torch import nn

from lsmn_core.errors import ConfigError
from lsmn_core.options import check
from lsmn_core.schemes.mann.packnet import PackNetTargets
from lsmn_core.schemes.mann.rsn2 import rsn2
from lsmn_core.schemes.masked import MaskedScheme


@dataclass
class MannOptions:
    kind: Literal["mann"] = "mann"
    keep: float = check(lambda v: 0 < v <= 1, "must be in (0, 1]", 0.1)  # each task's share of each matrix set
    # RSN2's cuts (PackNet, on a checkpoint, prunes each task once, as its paper)
    schedule: Literal["one_shot", "iterative"] = "iterative"
    rounds: int = check(lambda v: v >= 1, "must be >= 1", 3)  # prune-retrain rounds when iterative
    round_steps: int = check(lambda v: v > 0, "must be > 0", 300)


class Mann(MaskedScheme):
    kind = "mann"
    options_class = MannOptions
    on_checkpoint = PackNetTargets

    @classmethod
    def check_config(cls, config) -> None:
        """The tasks own disjoint shares: they must fit in one body (the first task that would not find
        its share free is named, with the share it would find)."""
        keep, tasks = config.scheme.keep, len(config.tasks)
        if tasks * keep > 1 + 1e-9:
            short = next(t for t in range(tasks) if 1 - t * keep < keep - 1e-9)
            raise ConfigError(f"scheme.keep: {tasks} tasks x {keep} = {tasks * keep:g} of the body, but MANN's task "
                              f"shares are disjoint; keep at most {1 / tasks:.4g} (task {config.tasks[short].name} "
                              f"would find {max(0.0, 1 - short * keep):.0%} of the weights free, not {keep:.0%})")

    def __init__(self, options, n_tasks, depth, block):
        super().__init__(options, n_tasks, depth, block)
        prunable = tuple(name for name in block.shapes if block.prunable(name))
        self.blocks = nn.ModuleList(block.stacked(n_tasks, unstacked=prunable) for _ in range(depth))
        self.register_masks()

    def unmasked(self, p, tasks):
        return p.index_select(0, tasks)  # each task its own norms and biases

    def usage(self, task):
        masks = self.task_masks(task)
        return {name: masks[name] if self.prunable(name) else self.task_rows(task, p)
                for name, p in self.named_parameters()}

    def update_masks(self, task):
        return self.usage(task)

    def search_routing(self, session):
        return rsn2(session, self, list(range(self.n_tasks)))

    def admit_tasks(self, session, tasks):
        """Give new tasks subnetworks among the weights no other task owns (RSN2 on them alone)."""
        return rsn2(session, self, tasks)
