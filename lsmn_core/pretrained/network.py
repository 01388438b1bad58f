"""A multitask network over a pretrained checkpoint: the checkpoint's network is shared by every task,
its repeated layers play the body's role, and the scheme (a TargetScheme) gives each task its own
value of every target weight inside them (the pretrained value masked, plus a delta, ...); each task
has its own head on the features it reads (pooled tokens, each token, or the network's output).

The checkpoint's weights are never part of the model's state: a run stores only what it made (the
scheme's state and the heads), and records its source (`Source`: the loader's options, each
weights file's sha256, the layers and every target's shape), which is enough to rebuild the run's
skeleton, and so to read its routing, without the checkpoint.
"""

from __future__ import annotations

import abc
import contextlib
import math
from collections.abc import Callable
from pathlib import Path
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.func import functional_call

from lsmn_core.data.tasks import TaskSpec
from lsmn_core.errors import RunError
from lsmn_core.network.layers import Head
from lsmn_core.network.model import MultitaskModel
from lsmn_core.pretrained import loader_of
from lsmn_core.pretrained.rows import grouped_linear, linear_modules
from lsmn_core.pretrained.checkpoint import (Checkpoint, MissingSourceError, check_fits_memory, find_targets,
                                              module_kind)
from lsmn_core.schemes.base import SharingScheme
from lsmn_core.store.files import json_integer


@dataclass
class Source:
    """What a run records of its checkpoint (run.json's "pretrained")."""

    source: str  # the loader's place for it (a folder or file)
    files: dict[str, str]  # weights file -> sha256
    layers: str  # the dotted path of its repeated blocks
    depth: int
    width: int
    parameters: int  # the checkpoint's own parameter count
    targets: dict[str, list[int]]  # target weight -> shape
    target_layers: dict[str, int]  # target weight -> its layer

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data, where: str) -> Source:
        """A stored record, checked before it sizes a skeleton (RunError naming what is wrong)."""
        try:
            source = cls(**data)
        except TypeError as exc:
            raise RunError(f"{where}: malformed 'pretrained' record ({exc})") from None
        counts = (source.depth, source.width, source.parameters)
        if not (isinstance(source.source, str) and isinstance(source.layers, str) and all(map(json_integer, counts))
                and isinstance(source.files, dict) and isinstance(source.targets, dict)
                and isinstance(source.target_layers, dict) and set(source.targets) == set(source.target_layers)):
            raise RunError(f"{where}: malformed 'pretrained' record")
        for name, shape in source.targets.items():
            sizes = isinstance(shape, list) and 1 <= len(shape) <= 5 and all(json_integer(n) and 0 < n < 2**31
                                                                             for n in shape)
            if not (sizes and math.prod(shape) < 2**34 and json_integer(source.target_layers[name])):
                raise RunError(f"{where}: the 'pretrained' record's target {str(name)[:80]!r} has no valid shape")
        return source


class TargetScheme(SharingScheme):
    """A sharing scheme over a checkpoint's target weights: each task's value of every target, by the
    checkpoint's own parameter names. Its parameters are named by `key` (dots become '__')."""

    def __init__(self, options, n_tasks: int, source: Source, config):
        super().__init__(options, n_tasks, source.depth, None)
        self.targets = {name: torch.Size(shape) for name, shape in source.targets.items()}
        self.target_layers = dict(source.target_layers)
        self.finetune_lr_scale = config.model.finetune_lr_scale

    @classmethod
    def build_network(cls, specs, config):
        return build_pretrained(cls, specs, config, None)

    @classmethod
    def choose_targets(cls, module: nn.Module, layers_path: str, layers: nn.ModuleList, config) -> dict[str, int]:
        """The weights the scheme acts on, each with its layer: the config's targets in the layers."""
        return find_targets(layers_path, layers, config.model.targets)

    @staticmethod
    def key(name: str) -> str:
        return name.replace(".", "__")

    @abc.abstractmethod
    def task_weights(self, task: int, pretrained: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Task `task`'s value of every target weight (those it changes), from their pretrained values."""

    def read_depth(self, task: int) -> int | None:
        """After how many layers the task's head reads the network (None: its output)."""
        return None

    def module_forwards(self, task: int, network: nn.Module, padding: torch.Tensor | None) -> dict[str, Callable]:
        """Forwards that replace some of `network`'s modules (by their dotted names) while task `task`
        runs, where a scheme routes inside them rather than giving them other weights (upcycled
        experts); `padding` [B, L] marks token inputs' padding. None by default."""
        return {}

    def row_forwards(self, tasks: list[int], network: nn.Module) -> dict[str, Callable] | None:
        """Forwards that replace `network`'s modules (by their dotted names) so that one call runs
        the rows of each of `tasks` side by side (grouped by task, in equal groups), each row as its
        own task's network would: by
        default each task's weights are built (task_weights) and every target linear layer applies
        them to its task's rows in one batched product. None where a target is not a linear layer's
        weight (the tasks then run in turn); a scheme that replaces modules (module_forwards) says None."""
        modules = linear_modules(self.targets, network)
        if modules is None:
            return None
        pretrained: dict[str, torch.Tensor] = {name: network.get_parameter(name) for name in self.targets}
        built = [self.task_weights(task, pretrained) for task in tasks]
        forwards: dict[str, Callable] = {}
        for module, (name, linear) in modules.items():
            if any(name in weights for weights in built):  # popped: a weight is let go once stacked, never held twice
                forwards[module] = grouped_linear(linear, torch.stack([w.pop(name, pretrained[name]) for w in built]))
        return forwards


class ReadingHead(nn.Module):
    """A task's head on the checkpoint's features: on each token (tagging), on the mean of the real
    tokens or the first token (`pool`), or on the features as the network gives them [B, width]."""

    def __init__(self, width: int, spec: TaskSpec, pool: str):
        super().__init__()
        self.per_token, self.pool = spec.kind == "tagging", pool
        self.head = Head(width, spec.n_outputs)

    def forward(self, h: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        if h.dim() == 2 or self.per_token:
            return self.head(h)
        if self.pool == "cls":
            return self.head(h[:, 0])
        real = torch.ones(h.shape[:2], dtype=h.dtype, device=h.device) if padding is None else (~padding).to(h.dtype)
        return self.head((h * real[..., None]).sum(1) / real.sum(1, keepdim=True).clamp_min(1))


class PretrainedNet(MultitaskModel):
    """Tasks over one checkpoint (see the module's docstring). `checkpoint` is None for a stored
    run's skeleton built from its record alone (routing checks; no forward)."""

    body: TargetScheme
    checkpoint: Checkpoint | None
    heads: nn.ModuleDict

    def __init__(self, specs: list[TaskSpec], body: TargetScheme, checkpoint: Checkpoint | None, source: Source,
                 pool: str):
        super().__init__(specs)
        self.body, self.source = body, source
        self.heads = nn.ModuleDict({s.name: ReadingHead(source.width, s, pool) for s in specs})
        object.__setattr__(self, "checkpoint", checkpoint)  # not a submodule: its weights are never the run's

    def _apply(self, fn, recurse=True):
        if self.checkpoint is not None:
            self.checkpoint.module._apply(fn)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True):
        if self.checkpoint is not None:
            self.checkpoint.module.train(mode)
        return super().train(mode)

    def network(self) -> Checkpoint:
        if self.checkpoint is None:
            raise MissingSourceError(f"the checkpoint {self.source.source} is not loaded: this is the run's skeleton")
        return self.checkpoint

    def pretrained(self) -> dict[str, torch.Tensor]:
        """The target weights' pretrained values, by name."""
        parameters = dict(self.network().module.named_parameters())
        return {name: parameters[name] for name in self.body.targets}

    def layers(self) -> nn.ModuleList:
        return self.network().layers(self.source.layers)[1]

    def masks(self) -> dict[str, torch.Tensor]:
        return self.body.masks()  # by the checkpoint's own parameter names

    def mask_layer(self, name: str) -> int:
        return self.body.target_layers[name]

    def mask_groups(self) -> dict[str, str]:
        return {name: module_kind(name) for name in self.body.targets}

    def features(self, x: torch.Tensor, task: int, taps: nn.ModuleList | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What task `task`'s head reads for inputs x [B, ...] (token ids: [B, L]), and the padding
        [B, L] of token inputs; `taps[i]` sees layer i's output on the way (attributions)."""
        spec, checkpoint = self.specs[task], self.network()
        padding = spec.padding(x) if spec.reads_ids else None
        attention = None if padding is None else (~padding).long()
        depth = self.body.read_depth(task)
        read: dict[str, torch.Tensor] = {}
        args, kwargs = checkpoint.inputs(x, attention)
        forwards = self.body.module_forwards(task, checkpoint.module, padding)
        with self._hooks(depth, taps, read), self._replaced(forwards):  # the task's values of its targets
            out = checkpoint.output(functional_call(checkpoint.module, self.body.task_weights(task, self.pretrained()),
                                                    args, kwargs))
        return (read["h"] if depth is not None else out), padding

    def features_together(self, x: torch.Tensor, tasks: list[int]
                          ) -> list[tuple[torch.Tensor, torch.Tensor | None]] | None:
        """features() of each task on its rows of x [T', B, ...], from one call of the checkpoint on
        all T' x B rows, where the scheme routes each row through its own task (`row_forwards`) and
        every head reads the network's output; None otherwise. One call of B x T' rows costs far
        less than T' calls of B rows each."""
        specs, checkpoint = [self.specs[t] for t in tasks], self.network()
        if any(self.body.read_depth(t) is not None for t in tasks) or len({s.reads_ids for s in specs}) > 1:
            return None
        forwards = self.body.row_forwards(tasks, checkpoint.module)
        if forwards is None:
            return None
        padding = torch.stack([s.padding(rows) for s, rows in zip(specs, x)]) if specs[0].reads_ids else None
        attention = None if padding is None else (~padding.flatten(0, 1)).long()
        args, kwargs = checkpoint.inputs(x.flatten(0, 1), attention)
        with self._replaced(forwards):
            out = checkpoint.output(checkpoint.module(*args, **kwargs)).unflatten(0, x.shape[:2])
        return [(h, None if padding is None else padding[i]) for i, h in enumerate(out)]

    @contextlib.contextmanager
    def _replaced(self, forwards: dict[str, Callable]):
        """The scheme's forwards in place of its modules' own (by their dotted names) while it runs."""
        network = self.network().module
        replaced = {network.get_submodule(name): forward for name, forward in forwards.items()}
        for module, forward in replaced.items():
            module.forward = forward  # an instance attribute: nn.Module calls it in place of the class's
        try:
            yield
        finally:
            for module in replaced:
                del module.forward

    @contextlib.contextmanager
    def _hooks(self, depth: int | None, taps: nn.ModuleList | None, read: dict[str, torch.Tensor]):
        """Forward hooks on the layers: layer depth - 1's output kept in `read`, and each layer's
        output passed through its tap."""
        layers, handles = self.layers(), []

        def hook(index: int):
            def seen(module, inputs, output):
                hidden = output[0] if isinstance(output, tuple) else output
                if taps is not None and index < len(taps):
                    hidden = taps[index](hidden)
                if depth is not None and index == depth - 1:
                    read["h"] = hidden
                if taps is None:
                    return None
                return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
            return seen

        if depth is not None or taps is not None:
            handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def forward_tasks(self, x: torch.Tensor, tasks: list[str | int] | None = None) -> list[torch.Tensor]:
        """Each task on x, shared [B, ...] (in turn) or per task [T', B, ...] (in one call of the
        checkpoint where the scheme can route each row, `features_together`)."""
        indices = [self.task_index(t) for t in (tasks if tasks is not None else range(len(self.specs)))]
        shared = x.dim() == len(self.specs[indices[0]].input_shape) + 1
        together = None if shared or len(indices) < 2 else self.features_together(x, indices)
        features = together or [self.features(x if shared else x[i], task) for i, task in enumerate(indices)]
        return [self.heads[self.specs[task].name](h, padding) for task, (h, padding) in zip(indices, features)]

    def forward_tapped(self, x: torch.Tensor, task: int, taps: nn.ModuleList) -> torch.Tensor:
        """The taps see each layer's output [B, L, width]."""
        h, padding = self.features(x, task, taps)
        return self.heads[self.specs[task].name](h, padding)

    def module_count(self, task: int) -> int:
        return self.body.read_depth(task) or self.source.depth

    def token_embeddings(self) -> list[nn.Module]:
        module = self.network().module
        embeddings = getattr(module, "get_input_embeddings", None)
        return [embeddings()] if callable(embeddings) else super().token_embeddings()

    def usage(self, task: int) -> dict[str, torch.Tensor]:
        usage = {name: torch.full_like(p, name.split(".")[1] == self.specs[task].name, dtype=torch.bool)
                 for name, p in self.heads.named_parameters(prefix="heads")}
        usage.update({f"body.{name}": used for name, used in self.body.usage(task).items()})
        return usage

    def parameter_counts(self) -> dict:
        """The checkpoint's parameters beside the run's own: a task uses every checkpoint weight but
        the targets its masks drop, and the parts of the run's own parameters it uses."""
        own = super().parameter_counts()
        masks, targets = self.body.masks(), sum(math.prod(s) for s in self.source.targets.values())
        kept = {t: sum(int(m[t].sum()) for m in masks.values()) if masks else targets for t in range(len(self.specs))}
        shared_targets = sum(int((m.flatten(1).sum(0) >= 2).sum()) for m in masks.values()) if masks else targets
        several = len(self.specs) >= 2
        return {"total": self.source.parameters + own["total"],
                "shared": own["shared"] + (self.source.parameters - targets + shared_targets if several else 0),
                "active": {s.name: self.source.parameters - targets + kept[t] + own["active"][s.name]
                           for t, s in enumerate(self.specs)}}


def check_source(config) -> None:
    """A config's checkpoint, checked before a run exists: its weights files are there, of a size
    this machine can load."""
    check_fits_memory(loader_of(config.model.pretrained).weight_files(), "load")


def open_source(config, weights: bool,
                target_scheme: type[TargetScheme] = TargetScheme) -> tuple[Checkpoint, Source]:
    """A config's checkpoint (with its weights, or a skeleton of its shapes) and its record, with the
    targets the scheme acts on."""
    checkpoint = loader_of(config.model.pretrained).open(weights)
    path, layers = checkpoint.layers(config.model.layers)
    targets = target_scheme.choose_targets(checkpoint.module, path, layers, config)
    parameters = dict(checkpoint.module.named_parameters())
    return checkpoint, Source(source=loader_of(config.model.pretrained).source(), files=checkpoint.files, layers=path,
                              depth=len(layers), width=checkpoint.width,
                              parameters=sum(p.numel() for p in parameters.values()),
                              targets={name: list(parameters[name].shape) for name in targets}, target_layers=targets)


def verified(checkpoint: Checkpoint, source: Source, recorded: Source) -> None:
    """A stored run's checkpoint must be the one it was made from: the same weights files, byte for
    byte (sha256), and the same targets; MissingSourceError otherwise, naming what differs."""
    found, made = ({Path(f).name: digest for f, digest in files.items()} for files in (source.files, recorded.files))
    if found != made:  # by file name: a models folder is elsewhere on another machine
        changed = sorted(set(made) ^ set(found)) or [f for f in made if made[f] != found.get(f)]
        raise MissingSourceError(f"the checkpoint {recorded.source} is not the one this run was made from: "
                                 f"{changed[0]} differs (sha256)")
    if source.targets != recorded.targets:
        raise MissingSourceError(f"the checkpoint {recorded.source} has other target weights than the run records")


def build_pretrained(target_scheme: type[TargetScheme], specs: list[TaskSpec], config,
                     record: dict | None) -> PretrainedNet:
    """The network of a config with a checkpoint, whose scheme acts through `target_scheme`: on the
    meta device from a stored run's `record` (no checkpoint read), or from the checkpoint (a
    skeleton on the meta device, else with its weights, checked against the record of a stored run)."""
    meta = torch.empty(0).device.type == "meta"
    if meta and record is not None:
        checkpoint, source = None, Source.from_dict(record, "run.json")
    else:
        checkpoint, source = open_source(config, not meta, target_scheme)
        if record is not None:
            verified(checkpoint, source, Source.from_dict(record, "run.json"))
    return PretrainedNet(specs, target_scheme(config.scheme, len(specs), source, config), checkpoint, source,
                         config.model.pool)
