"""Hierarchical sharing, one of the baselines the slides "Learning Sparse Sharing Architectures for
Multiple Tasks" set against sparse sharing: one body shared by every task, each task supervised at
a depth of its own, as in "Deep multi-task learning with low level tasks supervised at lower
layers" (Søgaard and Goldberg 2016). A task of depth d reads the body after its first d blocks;
the blocks above never see its samples, so its loss never trains them. Which task goes how deep is
the manual design the slides count against it: `depths` maps task names to depths, and a task it
does not name reads the whole body. On a pretrained checkpoint: one shared fine-tune, each task's
head reading the layer its depth names.
"""

from dataclasses import dataclass, field
from typing import Literal

import torch

from lsmn_core.errors import ConfigError
from lsmn_core.pretrained.deltas import Deltas
from lsmn_core.schemes.base import IsometricScheme


@dataclass
class HierarchicalOptions:
    kind: Literal["hierarchical"] = "hierarchical"
    depths: dict = field(default_factory=dict)  # task name -> the blocks its head reads after (1 .. model.depth)


class HierarchicalDeltas(Deltas):
    """One fine-tune of the checkpoint; each task's head reads the output of its depth's layer."""

    kind = "hierarchical"

    def __init__(self, options, n_tasks, source, config):
        super().__init__(options, n_tasks, source, config, copies=1)
        for name, depth in options.depths.items():
            if depth > source.depth:
                raise ConfigError(f"scheme.depths.{name}: must be a depth in 1 .. {source.depth} (the checkpoint's "
                                  f"layers, {source.layers})")
        self.task_depth = [options.depths.get(t.name) for t in config.tasks]

    def read_depth(self, task):
        return self.task_depth[task]


class Hierarchical(IsometricScheme):
    kind = "hierarchical"
    options_class = HierarchicalOptions
    baseline = True
    on_checkpoint = HierarchicalDeltas

    def __init__(self, options, n_tasks, depth, block):
        super().__init__(options, n_tasks, depth, block)
        self.blocks = block.shared(depth)
        self.register_buffer("task_depth", torch.full((n_tasks,), depth), persistent=False)

    @classmethod
    def check_config(cls, config) -> None:
        """Each named task a depth of the body (of a checkpoint: 1 or more; its layers are counted
        when it is opened)."""
        names = [t.name for t in config.tasks]
        pretrained = config.model.pretrained is not None
        depth = 2**20 if pretrained else config.model.depth
        for name, value in config.scheme.depths.items():
            if name not in names:
                raise ConfigError(f"scheme.depths: {str(name)[:40]!r} is not a task of this run")
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= depth:
                bounds = "1 or more (the checkpoint's layers)" if pretrained else f"1 .. {depth} (model.depth)"
                raise ConfigError(f"scheme.depths.{name}: must be a depth in {bounds}")

    @classmethod
    def build_network(cls, specs, config):
        model = super().build_network(specs, config)
        depths = config.scheme.depths
        model.body.task_depth.copy_(torch.tensor([depths.get(s.name, config.model.depth) for s in specs]))
        return model

    def block_params(self, layer, tasks):
        return {name: p.unsqueeze(0) for name, p in self.blocks[layer].items()}

    def layer_update(self, h, tasks, layer, padding=None):
        """Block `layer`'s update for the rows of tasks that read deeper than it, 0 for the others."""
        update = super().layer_update(h, tasks, layer, padding)
        reaches = (self.task_depth[tasks] > layer).to(update.dtype)
        return update * reaches.view(-1, *[1] * (update.dim() - 1))

    def usage(self, task):
        depth = int(self.task_depth[task])
        return {name: torch.full_like(p, int(name.split(".")[1]) < depth, dtype=torch.bool)
                for name, p in self.named_parameters()}

    def density(self):
        return (torch.arange(self.depth) < self.task_depth.cpu()[:, None]).float()

    def routing_summary(self, task_names):
        return {"depths": dict(zip(task_names, self.task_depth.tolist()))}
