"""The seam between a scheme and the trainer: what a routing search may ask of the training session
that runs it (`Session`), how it asks for training (`Phase`), and what it reports (`SearchReport`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

if TYPE_CHECKING:  # what a session holds, named for the type checker only (the trainer imports the schemes)
    from lsmn_core.config import RunConfig
    from lsmn_core.network.model import MultitaskModel
    from lsmn_core.training.distributed import DataParallel
    from lsmn_core.training.trainer import DeviceTasks, Reporter


@dataclass
class Phase:
    """One training phase: which tasks train, for how many steps, and how.

    `sampling` overrides the config's train.sampling ("all": every task each step, losses summed).
    With `early_stopping`, dev is evaluated every train.eval_every steps, the best state is kept and
    restored, and training stops after train.patience evaluations without a gain. `after_step` runs
    after every optimiser step (the alignment search learns its candidate weights there). With
    `checkpointing` (lsmn_core.training.checkpoint.Checkpointing), every evaluation is followed by a
    checkpoint, and a loaded one is continued from. `loss`, given the step's tasks, replaces their
    supervised loss with an objective of the phase's own (unsupervised domain adaptation: no label
    is read)."""

    name: str
    tasks: list[int]
    steps: int
    sampling: str | None = None
    early_stopping: bool = True
    after_step: Callable[[], None] | None = None
    checkpointing: Checkpoints | None = None
    loss: Callable[[list[int]], torch.Tensor] | None = None


@dataclass
class SearchReport:
    """What a routing search found, for the run: JSON for summary.json ("search") and extra arrays
    for routing.safetensors (every pruning round's masks, for example)."""

    summary: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


class Checkpoints(Protocol):
    """What a phase asks of its checkpointing (lsmn_core.training.checkpoint.Checkpointing)."""

    def resume(self, session, optimizer: torch.optim.Optimizer, stopping) -> int:
        """The step to continue from (0: the start), with the session, optimiser and early stopping restored."""

    def save(self, session, optimizer: torch.optim.Optimizer, step: int, stopping) -> None:
        """Write a checkpoint after `step`."""


class Session(Protocol):
    """What a routing search, or a scheme admitting new tasks, may use of the training session that
    runs it (lsmn_core.training.trainer.TrainingSession)."""

    model: MultitaskModel
    tasks: DeviceTasks  # the training data on its device: .specs, .splits, .device
    config: RunConfig
    reporter: Reporter  # .progress(phase, step, total, message, force) and .log(records)
    step: int  # global step over all phases, for metrics.jsonl
    task_generators: dict[int, torch.Generator]  # tasks that draw their batches from their own generator
    parallel: DataParallel | None  # under torchrun: this process's share of the data-parallel work

    def train(self, phase: Phase) -> int:
        """Run a phase; returns its last step."""

    def evaluate(self, task: int, split: str) -> tuple[float, float]:
        """(loss, metric) of one task on one split."""

    def evaluate_each(self, task_ids: list[int], split: str) -> list[tuple[float, float]]:
        """(loss, metric) of each task on one split (cheaper than one evaluate per task)."""

    def step_loss(self, step_tasks: list[int], split: str = "train") -> torch.Tensor:
        """The summed loss of one batch per task, in this process."""

    def fork(self, model: MultitaskModel, alone: bool = False) -> Session:
        """A session over another model (private copies of this one) with the same data, config,
        reporter and step; `alone`: trained by this process alone (under torchrun: no data
        parallelism, for work shared out between the processes)."""
