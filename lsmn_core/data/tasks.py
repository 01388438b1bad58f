"""What a task is, independent of its data: kind, metric, output size, input modality.

A TaskSpec is all the model needs to be rebuilt from a run directory without the data installed.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lsmn_core.store.files import json_integer

METRIC_OF_KIND = {"classification": "accuracy", "regression": "rmse", "tagging": "accuracy"}  # tagging: per token
# [H, W], [features], a 1-D signal [L], token ids of the task's own vocabulary [L], or text as a checkpoint's
# tokenizer's ids [L]
MODALITIES = ("image", "vector", "sequence", "tokens", "text")
PAD = 0  # the token id of padding; a tagging target is IGNORE there
IGNORE = -1
TASK_NAME = re.compile(r"[^./\\\x00-\x1f]{1,100}")  # parameters, heads and files are named after a task
# a task's head is a module of a ModuleDict under the task's name, which cannot be one of its attributes
RESERVED_NAMES = frozenset(dir(nn.ModuleDict()))


def task_name_problem(name) -> str | None:
    """Why `name` cannot name a task (None: it can)."""
    if not isinstance(name, str) or not TASK_NAME.fullmatch(name):
        return ("must be 1 to 100 characters, none of them '.', '/', '\\' or a control character (parameters and "
                "files are named after it)")
    if name in RESERVED_NAMES:
        return "is the name of an attribute of torch's module containers, which hold a head per task; pick another"
    return None


@dataclass
class TaskSpec:
    name: str
    kind: str  # "classification" | "regression"
    n_outputs: int  # classes, or 1 for regression
    modality: str  # "image" | "vector" | "sequence"
    input_shape: list[int]
    sizes: dict[str, int] = field(default_factory=dict)  # samples per split
    source: str = ""  # human-readable origin (data set, target, domain)
    splits: dict[str, str] = field(default_factory=dict)  # per split: "given" (as the data came) or "drawn"
    vocab: int = 0  # token and text tasks: ids 0 .. vocab - 1
    pad: int = PAD  # the id of padding (a text task's: its tokenizer's)

    @property
    def metric(self) -> str:
        return METRIC_OF_KIND[self.kind]

    @property
    def reads_ids(self) -> bool:
        """Whether its inputs are token ids (its own vocabulary's, or a tokenizer's for text)."""
        return self.modality in ("tokens", "text")

    @property
    def encoder_key(self) -> str:
        """Tasks with the same key read the same kind of input and can share an encoder."""
        return f"{self.modality}_" + "x".join(map(str, self.input_shape))

    def to_dict(self) -> dict:
        return {**asdict(self), "metric": self.metric}

    @classmethod
    def from_dict(cls, data: dict) -> TaskSpec:
        """A spec as stored (run.json, an export), checked: its values size the model's encoders and heads.
        Raises TypeError or ValueError naming what is wrong."""
        spec = cls(**{k: v for k, v in data.items() if k != "metric"})
        if problem := task_name_problem(spec.name):
            raise ValueError(f"task name {str(spec.name)[:40]!r} is not a valid task name: it {problem}")
        if spec.kind not in METRIC_OF_KIND or spec.modality not in MODALITIES:
            raise ValueError(f"task {spec.name}: unknown kind {str(spec.kind)[:20]!r} or modality "
                             f"{str(spec.modality)[:20]!r}")
        if not _count(spec.n_outputs, 2**20):
            raise ValueError(f"task {spec.name}: n_outputs must be an integer in 1 .. 1,048,576")
        shape = spec.input_shape
        if not (isinstance(shape, list) and 1 <= len(shape) <= 4 and all(_count(n, 2**16) for n in shape)
                and math.prod(shape) <= 2**26):
            raise ValueError(f"task {spec.name}: input_shape must be 1 to 4 sizes of at most 2**26 values in all")
        if spec.modality in ("tokens", "text") and not _count(spec.vocab, 2**24):
            raise ValueError(f"task {spec.name}: a token task needs a vocab of 1 .. 2**24 ids")
        if not (json_integer(spec.pad) and 0 <= spec.pad < max(spec.vocab, 1)):
            raise ValueError(f"task {spec.name}: its padding id must be an id of its vocabulary")
        return spec

    def padding(self, x: torch.Tensor) -> torch.Tensor:
        """Where a token or text task's inputs [..., L] are padding (bool)."""
        return x == self.pad


def _count(value, limit: int) -> bool:
    return json_integer(value) and 1 <= value <= limit


def task_loss(spec: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if spec.kind == "tagging":  # per token [B, L, C] against [B, L], over real tokens only
        return F.cross_entropy(output.flatten(0, -2), target.flatten(), ignore_index=IGNORE)
    if spec.kind == "classification":
        return F.cross_entropy(output, target)
    return F.mse_loss(output.squeeze(-1), target)


def metric_value(spec: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> float:
    """Accuracy for classification (over real tokens when tagging), RMSE for regression."""
    if spec.kind == "tagging":
        real = target != IGNORE
        return (output.argmax(-1) == target)[real].float().mean().item()
    if spec.kind == "classification":
        return (output.argmax(-1) == target).float().mean().item()
    return (output.squeeze(-1) - target).pow(2).mean().sqrt().item()


def score(spec: TaskSpec, value: float) -> float:
    """A metric turned into 'higher is better', for model selection across tasks."""
    return value if spec.kind == "classification" else -value
