"""A pretrained checkpoint as the Studio sees it: its network, the repeated layers that play the
body's role, the target weights inside them that a scheme acts on (in the spirit of peft's
`target_modules`), and the files it came from, each with its sha256 (a run records them, never a
copy of the weights).

A loader (registry `lsmn.pretrained`, one module per format) opens a checkpoint; everything here is
format-free.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from lsmn_core.errors import ConfigError, MissingModuleError
from lsmn_core.plugins import one_line

LINEAR_KINDS = ("Linear", "Conv1d", "Conv2d", "Conv3d", "Conv1D")  # Conv1D: GPT-2's linear layer, weight [in, out]


class MissingSourceError(MissingModuleError):
    """A run's checkpoint is not where the run says, or its weights are not the ones the run was
    made from: the views that need no weights still show the run."""


@dataclass
class Checkpoint:
    """An opened checkpoint: its network (weights loaded unless built as a skeleton on the meta
    device), how to call it (`inputs`: the arguments of its forward for a batch and its attention
    mask; `output`: the features [B, width] or [B, L, width] in what the forward returns), its hidden
    width, its tokenizer where it has one, and the weights files it came from with their sha256."""

    module: nn.Module
    inputs: Callable[[torch.Tensor, torch.Tensor | None], tuple[tuple, dict]]
    output: Callable[[Any], torch.Tensor]
    width: int
    tokenizer: Any = None
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256 ({} for a skeleton)

    def layers(self, path: str | None) -> tuple[str, nn.ModuleList]:
        """The repeated blocks at `path` (a dotted path to a module list), or detected."""
        return find_layers(self.module, path)


class Loader(Protocol):
    """What a registered pretrained loader (lsmn.pretrained) is: built from the config's
    `model.pretrained` mapping (its options, checked here, with ConfigError), it names its source
    and weights files and opens the checkpoint, with or without its weights."""

    path_keys: tuple[str, ...]  # which of its options are paths (taken relative to the config file)

    def __init__(self, options: dict) -> None: ...

    def source(self) -> str:
        """What the run records as the checkpoint's place (a folder or file)."""

    def weight_files(self) -> list[Path]:
        """The files holding the weights (hashed into the run, sized before loading)."""

    def open(self, weights: bool) -> Checkpoint:
        """The checkpoint: with its weights, or a skeleton of its shapes on the meta device."""

    def save(self, module: nn.Module, folder: Path, tokenizer) -> None:
        """Write `module` (the checkpoint's network with other weights) in the source's own format."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_fits_memory(files: list[Path], purpose: str, factor: float = 2.0) -> None:
    """Refuse, before anything loads, a checkpoint whose weights files (times `factor`: the weights,
    and what loading and training them takes beside) would not fit in this machine's memory."""
    size = sum(f.stat().st_size for f in files)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if size * factor > memory:
        raise ConfigError(f"model.pretrained: its weights files hold {size / 2**30:,.1f} GiB, about "
                          f"{size * factor / 2**30:,.1f} GiB to {purpose}, more than this machine's "
                          f"{memory / 2**30:,.1f} GiB")


def refuse_pickled_code(files: list[Path], where: str) -> None:
    """A state dict that is not safetensors is read with weights_only=True (on the meta device, so
    nothing is allocated): one that needs code unpickled (a whole pickled module) is refused, naming
    the file, before anything loads."""
    for file in files:
        if file.suffix == ".safetensors":
            continue
        try:
            state = torch.load(file, map_location="meta", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
            raise ConfigError(f"{where}: {file.name} needs code unpickled to load ({one_line(exc)[:160]}); give "
                              "safetensors or a plain state dict") from None
        if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
            raise ConfigError(f"{where}: {file.name} holds a {type(state).__name__}, not a state dict of tensors")


def find_layers(module: nn.Module, path: str | None) -> tuple[str, nn.ModuleList]:
    """The module list at `path`, or, when it is omitted, the module list of one block class (two
    or more blocks) that holds the most parameters; when two such lists hold about as many (within a
    factor of 2), the candidates are listed."""
    lists = {name: m for name, m in module.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0}
    if path is not None:
        if path not in lists:
            found = dict(module.named_modules()).get(path)
            what = "not found" if found is None else f"a {type(found).__name__}, not a module list"
            raise ConfigError(f"model.layers: {path!r} is {what}; candidates: {_candidates(lists) or 'none'}")
        return path, lists[path]
    blocks = {name: m for name, m in lists.items() if len(m) >= 2 and len({type(b) for b in m}) == 1}
    if not blocks:
        raise ConfigError("model.layers: the checkpoint has no module list of repeated blocks; name the layers "
                          f"(module lists: {_candidates(lists) or 'none'})")
    ranked = sorted(blocks, key=lambda name: -_count(blocks[name]))
    if len(ranked) > 1 and _count(blocks[ranked[0]]) < 2 * _count(blocks[ranked[1]]):
        raise ConfigError(f"model.layers: more than one module list could be the layers; name one: "
                          f"{_candidates(blocks)}")
    return ranked[0], blocks[ranked[0]]


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _candidates(lists: dict[str, nn.ModuleList]) -> str:
    return ", ".join(f"{name} ({len(m)} x {type(m[0]).__name__}, {_count(m):,} parameters)"
                     for name, m in list(lists.items())[:8])


def find_targets(layers_path: str, layers: nn.ModuleList, patterns: list[str] | None) -> dict[str, int]:
    """The target weights by their full names, each with its layer: by default the weight of every
    linear and convolution layer inside the layers (biases and norms stay shared); `patterns` pick
    among them: a pattern names a module by its last components ("query", "attention.output.dense")
    or is a glob over the weight's full name ("*.attention.*"). A pattern that matches nothing is
    refused."""
    found: dict[str, int] = {}
    for index, layer in enumerate(layers):
        for module_name, module in layer.named_modules():
            if type(module).__name__ in LINEAR_KINDS and isinstance(getattr(module, "weight", None), nn.Parameter):
                found[f"{layers_path}.{index}.{module_name}.weight"] = index
    if patterns is None:
        return found
    chosen: dict[str, int] = {}
    for pattern in patterns:
        matched = {name: layer for name, layer in found.items() if _matches(pattern, name)}
        if not matched:
            raise ConfigError(f"model.targets: {pattern!r} matches no linear or convolution weight in the layers "
                              f"(such as {next(iter(found), 'none')})")
        chosen.update(matched)
    return {name: found[name] for name in found if name in chosen}


def _matches(pattern: str, name: str) -> bool:
    module = name.removesuffix(".weight")
    return module == pattern or module.endswith("." + pattern) or fnmatch.fnmatchcase(name, pattern)


KINDS = [  # the kind of module a target weight belongs to, for grouping overlap and density (first match)
    ("query-key-value", r"(c_attn|qkv|query_key_value|Wqkv)$"),
    ("query", r"(query|q_proj|q_lin|\.q)$"),
    ("key", r"(key|k_proj|k_lin|\.k)$"),
    ("value", r"(value|v_proj|v_lin|\.v)$"),
    ("attention output", r"(attention\.output\.dense|attn\.c_proj|o_proj|out_lin|out_proj|attention\.o)$"),
    ("feed-forward in", r"(intermediate\.dense|mlp\.c_fc|lin1|fc1|up_proj|gate_proj|wi(_0|_1)?)$"),
    ("feed-forward out", r"(output\.dense|mlp\.c_proj|lin2|fc2|down_proj|wo)$"),
]


def module_kind(name: str) -> str:
    """query, key, value, attention output, feed-forward in or out (or "other") of a target weight."""
    module = name.removesuffix(".weight")
    return next((kind for kind, pattern in KINDS if re.search(pattern, module)), "other")
