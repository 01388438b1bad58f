"""The multitask networks. `MultitaskModel` is what the trainer, store and app need of any model;
`MultitaskNet` is modality encoders -> isometric body (a sharing scheme) -> one head per task.
A scheme that builds each task's whole network brings its own MultitaskModel."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

import torch
from torch import nn

from lsmn_core.data.tasks import TaskSpec
from lsmn_core.network.layers import mask_layer

if TYPE_CHECKING:  # the scheme builds this model around itself: a type-only import, no cycle at run time
    from lsmn_core.schemes.base import IsometricScheme, SharingScheme


class MultitaskModel(nn.Module, abc.ABC):
    """What the trainer, store and app need from any model: tasks, forward, usage and counts."""

    body: SharingScheme  # the sharing scheme: every model has one, whether it is a body of blocks or not

    def __init__(self, specs: list[TaskSpec]):
        super().__init__()
        self.specs = list(specs)
        self.task_names = [s.name for s in specs]

    def task_index(self, task: str | int) -> int:
        return task if isinstance(task, int) else self.task_names.index(task)

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """load_state_dict(state) (strict), one container's child at a time: torch filters the whole
        state for every child module, which for 1,000 task heads is 4 million key comparisons (a
        quarter of a second); loading each head from its own keys is linear."""
        if set(state) != set(self.state_dict()) or any("." not in key for key in state):
            self.load_state_dict(state)  # torch's own message for missing or unexpected keys
            return
        groups: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            parts = key.split(".")
            owner = self.get_submodule(parts[0]) if len(parts) > 2 else None
            depth = 2 if isinstance(owner, (nn.ModuleDict, nn.ModuleList)) else 1
            groups.setdefault(".".join(parts[:depth]), {})[".".join(parts[depth:])] = value
        for path, part in groups.items():
            self.get_submodule(path).load_state_dict(part)

    def forward(self, x: torch.Tensor, task: str | int) -> torch.Tensor:
        """One task's outputs for a batch x [B, ...]."""
        return self.forward_tasks(x, [task])[0]

    @abc.abstractmethod
    def forward_tasks(self, x: torch.Tensor, tasks: list[str | int] | None = None) -> list[torch.Tensor]:
        """Outputs of several tasks; x is shared [B, ...] or per task [T', B, ...]."""

    @abc.abstractmethod
    def usage(self, task: int) -> dict[str, torch.Tensor]:
        """For every parameter (full name), which elements task `task` uses."""

    @abc.abstractmethod
    def module_count(self, task: int) -> int:
        """How many modules task `task`'s path runs through (body blocks, or its own network's layers)."""

    @abc.abstractmethod
    def forward_tapped(self, x: torch.Tensor, task: int, taps: nn.ModuleList) -> torch.Tensor:
        """One task's outputs for x [B, ...], with taps[i] applied to module i's output [B, ...] on the
        way (identity taps give the plain outputs; attribution methods hook them)."""

    def token_embeddings(self) -> list[nn.Module]:
        """The embeddings of token inputs (where an attribution's path starts for a token task)."""
        return [m for m in self.modules() if isinstance(m, nn.Embedding)]

    def parameter_counts(self) -> dict:
        """Total parameters, those used by two or more tasks, and those each task uses."""
        users = {name: torch.zeros_like(p, dtype=torch.int32) for name, p in self.named_parameters()}
        active = {}
        for t, spec in enumerate(self.specs):
            usage = self.usage(t)
            active[spec.name] = int(sum(u.sum().item() for u in usage.values()))
            for name, u in usage.items():
                users[name] += u
        return {
            "total": sum(p.numel() for p in self.parameters()),
            "shared": int(sum((u >= 2).sum().item() for u in users.values())),
            "active": active,
        }

    @staticmethod
    def model_name(name: str) -> str:
        """A scheme's name for a parameter or mask as the model names it: the body's own are under
        'body.'; the shared encoders' ('encoders.<key>. ...', where a scheme prunes them) are the model's."""
        return name if name.startswith("encoders.") else f"body.{name}"

    def masks(self) -> dict[str, torch.Tensor]:
        """Per-task masks of the prunable weights (the body's, and the encoders' where the scheme prunes
        them), by full parameter name."""
        return {self.model_name(n): m for n, m in self.body.masks().items()}

    def scheme_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters a scheme's update masks may name, by the scheme's names."""
        return dict(self.body.named_parameters())

    def mask_layer(self, name: str) -> int:
        """The layer a mask (by its name in masks()) belongs to: a body block, or ENCODER_LAYER."""
        return mask_layer(name)

    def mask_groups(self) -> dict[str, str]:
        """The kind of module of each mask, where the model knows it (a checkpoint's query, key, ...)."""
        return {}


class MultitaskNet(MultitaskModel):
    """Encoders (shared by tasks with the same input, or per task when the body says so) -> `body`,
    an isometric sharing scheme -> one head per task; encoders and heads are its block's adapters."""

    body: IsometricScheme

    def __init__(self, specs: list[TaskSpec], body: IsometricScheme):
        super().__init__(specs)
        self.body = body
        self.encoders = nn.ModuleDict()
        for spec in specs:
            key = self.encoder_key(spec)
            if key not in self.encoders:
                self.encoders[key] = body.block.encoder(spec)
        self.heads = nn.ModuleDict({s.name: body.block.head(s) for s in specs})
        readers: dict[str, list[int]] = {}
        for t, spec in enumerate(specs):
            readers.setdefault(self.encoder_key(spec), []).append(t)
        body.adopt_encoders(self.encoders, readers)

    def encoder_key(self, spec: TaskSpec) -> str:
        return f"task_{spec.name}" if self.body.per_task_encoders else spec.encoder_key

    def scheme_parameters(self) -> dict[str, nn.Parameter]:
        return {**super().scheme_parameters(), **{f"encoders.{n}": p for n, p in self.encoders.named_parameters()}}

    def encode(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """Task `task`'s encoding of x [B, ...]: its encoder, seen through the task's own masks where the
        scheme prunes encoders (which name them by the shared encoder's key)."""
        spec = self.specs[task]
        encoder = self.encoders[self.encoder_key(spec)]
        params = self.body.encoder_params(spec.encoder_key, encoder, task)
        return encoder(x) if params is None else torch.func.functional_call(encoder, params, (x,))

    def forward_tasks(self, x: torch.Tensor, tasks: list[str | int] | None = None) -> list[torch.Tensor]:
        """Several tasks at once through one batched body; x is shared [B, ...] or per task [T', B, ...]."""
        indices = [self.task_index(t) for t in (tasks if tasks is not None else range(len(self.specs)))]
        specs = [self.specs[i] for i in indices]
        h, padding = self.representations(x, indices)
        return [self.head(spec, h[i], None if padding is None else padding[i]) for i, spec in enumerate(specs)]

    def representations(self, x: torch.Tensor, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The body's outputs [T', B, *activation] for tasks `indices` (what their heads read, and what
        domain adaptation aligns), and the token inputs' padding [T', B, L] (None without tokens)."""
        specs = [self.specs[i] for i in indices]
        shared_input = x.dim() == len(specs[0].input_shape) + 1
        encoded, cache = [], {}
        for i, (index, spec) in enumerate(zip(indices, specs)):
            key = self.encoder_key(spec)
            if not shared_input or self.body.prunes_encoders:
                encoded.append(self.encode(x if shared_input else x[i], index))
            else:
                if key not in cache:  # tasks that share an encoder encode a shared batch once
                    cache[key] = self.encoders[key](x)
                encoded.append(cache[key])
        padding = self.padding(x, specs, shared_input, encoded)
        # built on the host, copied without waiting for the device (no sync in the training step)
        return self.body(torch.stack(encoded), torch.tensor(indices).to(x.device, non_blocking=True), padding), padding

    @staticmethod
    def padding(x: torch.Tensor, specs: list[TaskSpec], shared_input: bool,
                encoded: list[torch.Tensor]) -> torch.Tensor | None:
        """[T', B, L]: where token inputs are padding (none in the other tasks' L positions of their
        encoded activations [B, L, d]); None when no task reads tokens."""
        if not any(s.reads_ids for s in specs):
            return None
        return torch.stack([s.padding(x if shared_input else x[i]) if s.reads_ids else
                            torch.zeros(e.shape[:2], dtype=torch.bool, device=e.device)
                            for i, (s, e) in enumerate(zip(specs, encoded))])

    def head(self, spec: TaskSpec, h: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        return self.heads[spec.name](h, padding) if spec.reads_ids else self.heads[spec.name](h)

    def usage(self, task: int) -> dict[str, torch.Tensor]:
        """For every parameter (full name), which elements task `task` uses."""
        spec = self.specs[task]
        usage = {}
        for name, p in self.named_parameters():
            if name.startswith("encoders."):
                usage[name] = torch.full_like(p, name.split(".")[1] == self.encoder_key(spec), dtype=torch.bool)
            elif name.startswith("heads."):
                usage[name] = torch.full_like(p, name.split(".")[1] == spec.name, dtype=torch.bool)
        for scheme_name, used in self.body.usage(task).items():  # an encoder's weights: its masks, where it has them
            name = self.model_name(scheme_name)
            usage[name] = usage[name] & used if name in usage else used
        return usage

    def module_count(self, task: int) -> int:
        return self.body.depth

    def forward_tapped(self, x: torch.Tensor, task: int, taps: nn.ModuleList) -> torch.Tensor:
        """The taps see each body block's residual update [B, *activation]."""
        spec = self.specs[task]
        h = self.encode(x, task).unsqueeze(0)
        tasks = torch.tensor([task], device=x.device)
        padding = self.padding(x, [spec], True, [h[0]])
        h = self.body(h, tasks, padding, taps)
        return self.head(spec, h[0], None if padding is None else padding[0])
