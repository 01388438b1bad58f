"""Single-task baseline: every task has its own copy of every block (and its own encoder); on a
pretrained checkpoint, a full fine-tune per task (its own delta of every target weight), or a LoRA
adapter per task (`adapter: {lora: {rank, alpha}}`, lsmn_core.pretrained.lora)."""

from dataclasses import dataclass
from typing import Literal

from torch import nn

from lsmn_core.errors import ConfigError
from lsmn_core.pretrained.changes import ReportsChanges
from lsmn_core.pretrained.deltas import Deltas
from lsmn_core.pretrained.lora import AdapterOptions, LoraAdapters
from lsmn_core.schemes.base import IsometricScheme


@dataclass
class IndependentOptions:
    kind: Literal["independent"] = "independent"
    adapter: AdapterOptions | None = None  # on a checkpoint: {lora: {rank: 8, alpha: 16}} instead of a fine-tune


class IndependentDeltas(ReportsChanges, Deltas):
    """A fine-tune of the checkpoint per task."""

    kind = "independent"

    def __init__(self, options, n_tasks, source, config):
        super().__init__(options, n_tasks, source, config, copies=n_tasks)


class IndependentAdapters(ReportsChanges, LoraAdapters):
    """A LoRA adapter of the checkpoint per task."""

    kind = "independent"


class Independent(IsometricScheme):
    kind = "independent"
    options_class = IndependentOptions
    per_task_encoders = True
    baseline = True
    on_checkpoint = IndependentDeltas

    def __init__(self, options, n_tasks, depth, block):
        super().__init__(options, n_tasks, depth, block)
        self.blocks = nn.ModuleList(block.stacked(n_tasks) for _ in range(depth))

    @classmethod
    def check_config(cls, config) -> None:
        if config.scheme.adapter is not None and config.model.pretrained is None:
            raise ConfigError("scheme.adapter: LoRA adapters are for a pretrained network (model.pretrained)")

    @classmethod
    def checkpoint_scheme(cls, options) -> type:
        return IndependentAdapters if options.adapter is not None else IndependentDeltas

    def block_params(self, layer, tasks):
        # index_select: a faster backward than p[tasks]
        return {name: p.index_select(0, tasks) for name, p in self.blocks[layer].items()}

    def usage(self, task):
        return {name: self.task_rows(task, p) for name, p in self.named_parameters()}

    def update_masks(self, task):
        return self.usage(task)
