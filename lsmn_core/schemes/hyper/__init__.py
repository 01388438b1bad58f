"""Modular universal reparameterization (MUiR), after the poster "Modular Universal
Reparameterization: Deep Multi-Task Learning Across Diverse Domains": tasks share functionality
through hypermodules that generate blocks of their weights (hypermodules.py), found by an alignment
search (search.py).

The weights go into one of two networks (scheme.network): each task's own architecture, which need
not look like any other task's (architectures.py, the poster's cross-modal setting), or a body of
blocks between shared encoders and task heads (body.py), so that MUiR runs on any block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lsmn_core.errors import ConfigError
from lsmn_core.options import check
from lsmn_core.schemes.hyper.architectures import ARCHITECTURES, TaskNetworks
from lsmn_core.schemes.hyper.body import HyperBody
from lsmn_core.schemes.hyper.hypermodules import Hypermodules


@dataclass
class HyperOptions:
    kind: Literal["hyper"] = "hyper"
    network: Literal["architectures", "body"] = "architectures"  # each task's own network, or the body of blocks
    block: list[int] = check(lambda v: len(v) == 2 and min(v) > 0, "must be two sizes [m, n], both > 0",
                             default_factory=lambda: [16, 16])
    context: int = check(lambda v: v > 0, "must be > 0", 4)  # c, the size of each location's context
    hypermodules: int | None = check(lambda v: v is None or v > 0, "must be > 0", None)  # K; default half the locations
    alignment: Literal["random", "distinct", "groups"] = "random"  # how psi starts
    groups: list[int] | None = None  # per task, for alignment "groups": tasks of one group share hypermodules
    generations: int = check(lambda v: v >= 0, "must be >= 0 (0: keep the initial alignment)", 20)
    generation_steps: int = check(lambda v: v > 0, "must be > 0", 100)
    optimize_fraction: float = check(lambda v: 0 < v <= 1, "must be in (0, 1]", 0.5)
    challengers: int = check(lambda v: v >= 1, "must be >= 1", 4)  # lambda
    # the incumbent's share of a location's mix when a generation starts; None: an equal share with
    # each challenger, 1 / (1 + lambda), as in the poster
    incumbent_share: float | None = check(lambda v: v is None or 0 < v < 1, "must be between 0 and 1 (exclusive)",
                                          None)
    new_probability: float = check(lambda v: 0 <= v <= 1, "must be in [0, 1]", 0.05)
    sampling: Literal["proportional", "uniform"] = "proportional"
    score_lr: float = check(lambda v: v > 0, "must be > 0", 0.1)  # s_l's own learning rate (Adam)
    score_split: Literal["dev", "train"] = "dev"  # the batches s_l learns from: held-out data judges candidates


class Hyper(Hypermodules):
    """The registry's entry: checks a config and builds the network its options ask for."""

    options_class = HyperOptions

    @classmethod
    def check_config(cls, config) -> None:
        """Per-task architectures (default by input) have no body; a body has no per-task architectures."""
        body = config.scheme.network == "body"
        if not body and config.model.block != "mlp":  # a name, or a user block's mapping
            raise ConfigError("model.block: the hyper scheme builds each task's own network (tasks[i].architecture) "
                              "and has no body of blocks; set scheme.network: body to build a body's weights from "
                              "hypermodules")
        for i, task in enumerate(config.tasks):
            if task.architecture is not None and body:
                raise ConfigError(f"tasks[{i}].architecture: with scheme.network 'body' every task runs through "
                                  "the body of blocks")
            if task.architecture is not None and task.architecture not in ARCHITECTURES:
                raise ConfigError(f"tasks[{i}].architecture: unknown architecture {task.architecture!r} "
                                  f"(known: {', '.join(ARCHITECTURES)})")

    @classmethod
    def build_network(cls, specs, config):
        network = HyperBody if config.scheme.network == "body" else TaskNetworks
        return network.build_network(specs, config)
