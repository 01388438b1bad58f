"""What a merge method is: a way of combining the task vectors (fine-tuned minus pretrained weights)
of one checkpoint's fine-tunes into one network, or one per task, applied one tensor at a time so
that a merge never holds more than a tensor of each fine-tune.

Every built-in method has one shape: each task's vector is turned into its part (trimmed, dropped,
kept where its sign agrees with the others', ...), the parts are summed with per-task, per-layer
coefficients (1 unless learned, as AdaMerging learns them), scaled by lambda, and optionally masked
per task (TALL) or for all (consensus):

    merged_t = lambda * mask_t * sum_s c[s, layer] * part_s

Parts are elementwise once a task's level over its whole tensor is known (`level`: the magnitude
TIES keeps), so a tensor too large to hold T times is merged in chunks of rows.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from lsmn_core.errors import ConfigError


COMMON = 0.8  # Iso-CTS's share of directions taken from the sum of the task vectors (the paper's default)


@dataclass
class Recipe:
    """A merge's settings: the method, lambda, the density a method keeps, the seed of a random one,
    per-task coefficients by layer (rows: tasks; columns: the checkpoint's layers, with one before
    and one after them), TALL's per-task lambda, consensus's minimum of tasks, the weights a
    matrix merge takes the mean of besides its own (fnmatch patterns of parameter names), the
    share of each weight's numbers a compression keeps per task (None: its paper's default), and
    Iso-CTS's share of directions common to all tasks."""

    method: str
    lam: float
    density: float = 0.2
    seed: int = 0
    coefficients: list[list[float]] = field(default_factory=list)
    tall_lambdas: list[float] = field(default_factory=list)
    consensus_k: int = 2
    exclude: list[str] = field(default_factory=list)  # name patterns a matrix merge takes the mean of
    keep: float | None = None
    common: float = COMMON

    def check(self, tasks: int, columns: int) -> Recipe:
        """Refuse settings no merge can use (ConfigError naming the setting)."""
        if not (isinstance(self.lam, (int, float)) and math.isfinite(self.lam)):
            raise ConfigError(f"lambda must be a finite number, got {self.lam!r:.40}")
        if not (isinstance(self.density, (int, float)) and 0 < self.density <= 1):
            raise ConfigError(f"density must be in (0, 1], got {self.density!r:.40}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be a whole number >= 0, got {self.seed!r:.40}")
        if isinstance(self.consensus_k, bool) or not isinstance(self.consensus_k, int) or self.consensus_k < 1:
            raise ConfigError(f"consensus_k must be a whole number >= 1, got {self.consensus_k!r:.40}")
        table = torch.as_tensor(self.coefficients, dtype=torch.float64) if self.coefficients else None
        if table is not None and (tuple(table.shape) != (tasks, columns) or not torch.isfinite(table).all()):
            finite = "" if torch.isfinite(table).all() else ", not finite"
            raise ConfigError(f"coefficients must be a table of {tasks} tasks x {columns} layers of finite numbers "
                              f"(got {'x'.join(map(str, table.shape))}{finite})")
        if not (isinstance(self.exclude, list) and all(isinstance(p, str) and p for p in self.exclude)):
            raise ConfigError("exclude must be a list of name patterns such as '*.attention.*'")
        if self.keep is not None and not (isinstance(self.keep, (int, float)) and 0 < self.keep <= 1):
            raise ConfigError(f"keep must be in (0, 1], got {self.keep!r:.40}")
        if not (isinstance(self.common, (int, float)) and 0 < self.common < 1):
            raise ConfigError(f"common must be in (0, 1), got {self.common!r:.40}")
        if self.tall_lambdas and (len(self.tall_lambdas) != tasks
                                  or not all(isinstance(v, (int, float)) and v >= 0 and math.isfinite(v)
                                             for v in self.tall_lambdas)):
            raise ConfigError(f"tall_lambdas must be {tasks} finite numbers >= 0, one per task")
        return self

    def table(self, tasks: int, columns: int) -> torch.Tensor:
        """The coefficients [tasks, columns] (all 1 when none are given)."""
        if not self.coefficients:
            return torch.ones(tasks, columns)
        return torch.tensor(self.coefficients, dtype=torch.float32)


class MergeMethod(abc.ABC):
    """One merge method. `parts` and the masks see a chunk of one tensor's task vectors [T, ...] in
    float32; `level` sees one task's whole vector of that tensor first."""

    name: ClassVar[str]
    default_lambda: ClassVar[float]  # the scale its paper's merges use
    uses_density: ClassVar[bool] = False
    random: ClassVar[bool] = False  # uses the recipe's seed
    per_task: ClassVar[bool] = False  # each task gets its own masked merge (evaluated task by task)
    uses_tall_lambdas: ClassVar[bool] = False  # reads the recipe's per-task TALL lambdas
    uses_keep: ClassVar[bool] = False  # reads the recipe's keep
    uses_common: ClassVar[bool] = False  # reads the recipe's common
    own_parts: ClassVar[bool] = False  # each task's network is its own part alone (a compression, not a merge)

    needs_level: ClassVar[bool] = False  # reads each task's whole tensor first (level)

    def level(self, delta: torch.Tensor, recipe: Recipe) -> float | None:
        """What the method needs of one task's whole tensor before its chunks, where it needs_level."""
        return None

    @abc.abstractmethod
    def parts(self, deltas: torch.Tensor, levels: list[float | None], recipe: Recipe,
              generator: torch.Generator) -> torch.Tensor:
        """Each task's part [T, ...] of the merged delta, before coefficients and lambda."""

    def masks(self, deltas: torch.Tensor, recipe: Recipe) -> torch.Tensor | None:
        """Where each task's merge is kept [T, ...] (per_task methods) or where the merge is kept [1, ...];
        None: everywhere."""
        return None


class Compression(MergeMethod):
    """A method that gives each task its own part alone, from numbers it stores per task (`lsmn merge`
    writes them beside the network, and the part is rebuilt from them exactly)."""

    own_parts = True

    @abc.abstractmethod
    def stored(self, name: str, deltas: torch.Tensor, recipe: Recipe) -> list[dict[str, torch.Tensor]]:
        """Each task's numbers of one tensor, from its vectors [T, ...]."""

    @abc.abstractmethod
    def stored_shapes(self, name: str, shape: tuple[int, ...], tasks: int,
                      recipe: Recipe) -> dict[str, tuple[int, ...]]:
        """The shape of each of the numbers `stored` gives a task of a tensor of `shape`, known before
        any are computed (so that they are written as they come)."""

    @abc.abstractmethod
    def from_stored(self, numbers: dict[str, torch.Tensor]) -> torch.Tensor:
        """A task's part of one tensor, rebuilt from the numbers `stored` gave it."""
