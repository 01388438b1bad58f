"""The sharing-scheme interface. The model, trainer, store and app talk to a scheme only through
it, so adding a scheme never touches them.

`SharingScheme` is what every scheme answers (usage, masks, routing, search); `IsometricScheme`
adds the isometric body and its question "the weights of block l for task t". What a routing
search may ask of the training that runs it is lsmn_core.training.session.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from lsmn_core.network.blocks import Block, make_block
from lsmn_core.errors import ConfigError
from lsmn_core.network.model import MultitaskModel, MultitaskNet
from lsmn_core.training.session import Phase, SearchReport, Session
from lsmn_core.data.tasks import TaskSpec


@dataclass
class RoutingReport:
    """What `lsmn show` says of a scheme's own routing, beyond what every run has (metrics, counts,
    the masks' overlap): `data` goes under "routing" in its JSON, `lines` are printed for people."""

    data: dict = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


class SharingScheme(nn.Module, abc.ABC):
    kind: ClassVar[str]
    options_class: ClassVar[type]  # its options dataclass, built from the config's `scheme` mapping
    per_task_encoders: ClassVar[bool] = False  # True: each task also gets its own encoder
    prunes_encoders: bool = False  # True: tasks see the shared encoders through masks of their own
    baseline: ClassVar[bool] = False  # a baseline's runs are shown beside other runs of the same tasks
    own_architectures: ClassVar[bool] = False  # True: each task's whole network, by its config's `architecture`
    # its counterpart over a pretrained checkpoint's target weights (lsmn_core.pretrained.network.TargetScheme);
    # None: the scheme works on the Studio's own networks only
    on_checkpoint: ClassVar[type | None] = None

    def __init__(self, options, n_tasks: int, depth: int, block: Block | None):
        super().__init__()
        self.options, self.n_tasks, self.depth, self.block = options, n_tasks, depth, block

    @classmethod
    def check_config(cls, config) -> None:
        """Refuse (ConfigError) a run config this scheme cannot serve; called once it is parsed."""

    @classmethod
    def checkpoint_scheme(cls, options) -> type:
        """Its counterpart over a checkpoint for these options (`on_checkpoint` unless the options
        pick another, as an adapter does)."""
        assert cls.on_checkpoint is not None
        return cls.on_checkpoint

    @classmethod
    def stored_paths(cls, config, folder: Path) -> None:
        """Make the paths a stored run's options give relative to its folder absolute (a run that refers
        to runs beside it, as a task vectors run does, moves with them); none by default."""

    @classmethod
    def check_sources(cls, config) -> None:
        """Refuse (MissingSourceError) a stored run whose network reads files kept outside its folder
        that are gone, found without reading them (for pages that need the network); none by default."""

    @classmethod
    @abc.abstractmethod
    def build_network(cls, specs: list[TaskSpec], config) -> MultitaskModel:
        """A freshly initialised model of `config` (a RunConfig) whose body is this scheme."""

    def inherit_routing(self, parent: SharingScheme) -> None:
        """Copy the per-task routing buffers that are not in the state dict (masks) from `parent`, a
        scheme of the same kind over the first tasks of this one (a fine-tuned child with added tasks)."""

    def usage(self, task: int) -> dict[str, torch.Tensor]:
        """For each of this scheme's parameters, which elements `task` uses (bool, the parameter's shape)."""
        return {name: torch.ones_like(p, dtype=torch.bool) for name, p in self.named_parameters()}

    def update_masks(self, task: int) -> dict[str, torch.Tensor]:
        """Parameters whose update, when training `task` alone, must stay inside the given mask.

        Gradients outside a task's subnetwork are already zero; this also stops optimiser momentum
        from earlier steps of other tasks moving weights this step does not own.
        """
        return {}

    def masks(self) -> dict[str, torch.Tensor]:
        """Per-task masks of the prunable weights, {parameter name: bool [T, *shape]}; empty if none."""
        return {}

    def density(self) -> torch.Tensor:
        """[T, depth]: fraction of each block's prunable weights that each task uses."""
        return torch.ones(self.n_tasks, self.depth)

    def search_routing(self, session: Session) -> SearchReport:
        """Find this scheme's routing before multi-task training (pruning, search); schemes without
        a search report nothing."""
        return SearchReport()

    def admit_tasks(self, session: Session, tasks: list[int]) -> SearchReport:
        """Prepare new tasks (appended at `tasks`) so training them leaves the old tasks' outputs
        unchanged; only schemes that isolate tasks can. Returns a report like search_routing."""
        raise ConfigError(f"the {self.kind} scheme cannot add tasks without changing the old ones")

    def routing_document(self, task_names: list[str]) -> dict:
        """The scheme's own JSON part of routing.json (masks are written generically)."""
        return {}

    def parse_routing_document(self, doc: dict, task_names: list[str]) -> dict:
        """Validate the scheme's part of a (possibly edited) routing.json; raise RoutingError if invalid."""
        return {}

    def load_routing(self, state: dict) -> None:
        """Install a validated routing state: "masks" by parameter name, plus the scheme's own keys."""

    def routing_parameters(self) -> list[str]:
        """Names of the trainable parameters that make up the per-task routing (mixture: xi)."""
        return []

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate multipliers for some of the scheme's parameters (by name); others get 1."""
        return {}

    def penalty(self, task: int) -> torch.Tensor | float:
        """An extra loss term for `task` (e.g. an entropy penalty on its routing); 0 when none."""
        return 0.0

    def auxiliary_loss(self) -> torch.Tensor | float:
        """An extra loss term of the latest forward pass as a whole, whatever tasks it ran (e.g. the
        balance losses of a gate over all its rows), added once per forward; 0 when none."""
        return 0.0

    def reset_statistics(self) -> None:
        """Forget statistics gathered while evaluating (the final evaluation gathers them afresh)."""

    @classmethod
    def routing_report(cls, doc: dict, task_names: list[str]) -> RoutingReport | None:
        """The scheme's own report of a checked routing document (what `lsmn show` prints of it);
        None: nothing beyond the generic summary."""
        return None

    @classmethod
    def summary_report(cls, summary: dict, task_names: list[str]) -> dict:
        """What `lsmn show --json` adds of the scheme's own part of a run's summary; nothing by default."""
        return {}

    def per_task_norms(self) -> list[str]:
        """The per-task normalisation parameters (a task's own norms, by the scheme's names), which a
        fine-tune of the routing may train with it (`with_norms`); none by default."""
        return []

    def finetune_phase(self, session: Session, tasks: list[int], steps: int) -> Phase | None:
        """How retraining the routing trains (`lsmn finetune --train routing`), where it is not the
        tasks' supervised loss (task vectors: AdaMerging's entropy); None: the supervised loss."""
        return None

    def routing_summary(self, task_names: list[str]) -> dict:
        """A small JSON report of the learned routing for summary.json; {} when none."""
        return {}

    @staticmethod
    def task_rows(task: int, param: torch.Tensor) -> torch.Tensor:
        """A bool mask selecting `task`'s slice of a per-task parameter [T, ...]."""
        owned = torch.zeros_like(param, dtype=torch.bool)
        owned[task] = True
        return owned

    def prunable(self, name: str) -> bool:
        """Whether a body parameter ("blocks.3.w_in") is one its block prunes."""
        return self.block is not None and self.block.prunable(name.rsplit(".", 1)[-1])


class IsometricScheme(SharingScheme):
    """A scheme that owns the isometric body between shared encoders and task heads: every block
    maps [T', B, width] to itself with per-task weights (a scheme that builds each task's whole
    network is not of this kind)."""

    block: Block  # an isometric body always has its block

    @classmethod
    def build_network(cls, specs, config):
        return MultitaskNet(specs, cls(config.scheme, len(specs), config.model.depth, make_block(config.model)))

    @property
    def width(self) -> int:
        return self.block.width

    def adopt_encoders(self, encoders: nn.ModuleDict, readers: dict[str, list[int]]) -> None:
        """The model's shared encoders (by key) and the tasks that read each, once they exist: a
        scheme that prunes encoders masks their weights per task as it masks the body's."""

    def encoder_params(self, key: str, encoder: nn.Module, task: int) -> dict[str, torch.Tensor] | None:
        """Task `task`'s parameters of shared encoder `key` where the task sees it through masks of its
        own; None: the encoder's own parameters, shared by every task that reads it."""
        return None

    @abc.abstractmethod
    def block_params(self, layer: int, tasks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Block `layer`'s parameters for `tasks` (indices), each with a leading axis of len(tasks) or 1."""

    def layer_update(self, h: torch.Tensor, tasks: torch.Tensor, layer: int,
                     padding: torch.Tensor | None = None) -> torch.Tensor:
        """Block `layer`'s residual update for h [T', B, *activation] (the body computes h + update);
        `padding` [T', B, L] marks token inputs' padding."""
        return self.block.branch(h, self.block_params(layer, tasks), padding)

    def forward(self, h: torch.Tensor, tasks: torch.Tensor, padding: torch.Tensor | None = None,
                taps: nn.ModuleList | None = None) -> torch.Tensor:
        """h [T', B, *activation] -> the same shape, row i computed with task tasks[i]'s weights.
        `taps` (one row, T' = 1): taps[l] is applied to block l's update [B, *activation] on the way,
        where attribution methods hook it."""
        for layer in range(self.depth):
            update = self.layer_update(h, tasks, layer, padding)
            h = h + (update if taps is None else taps[layer](update[0]).unsqueeze(0))
        return h
