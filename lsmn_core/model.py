"""The multitask network: modality encoders -> isometric body (a sharing scheme) -> one head per task."""

from __future__ import annotations

import torch
from torch import nn

from lsmn_core.blocks import Head, make_encoder
from lsmn_core.config import ModelConfig
from lsmn_core.schemes import scheme_class
from lsmn_core.tasks import TaskSpec


class MultitaskNet(nn.Module):
    def __init__(self, specs: list[TaskSpec], model: ModelConfig, scheme_options):
        super().__init__()
        self.specs = list(specs)
        self.task_names = [s.name for s in specs]
        scheme = scheme_class(scheme_options.kind)
        self.body = scheme(scheme_options, len(specs), model.depth, model.width, model.width * model.expansion)
        self.encoders = nn.ModuleDict()
        for spec in specs:
            key = self.encoder_key(spec)
            if key not in self.encoders:
                self.encoders[key] = make_encoder(spec, model.width)
        self.heads = nn.ModuleDict({s.name: Head(model.width, s.n_outputs) for s in specs})

    def encoder_key(self, spec: TaskSpec) -> str:
        return f"task_{spec.name}" if self.body.per_task_encoders else spec.encoder_key

    def task_index(self, task: str | int) -> int:
        return task if isinstance(task, int) else self.task_names.index(task)

    def forward(self, x: torch.Tensor, task: str | int) -> torch.Tensor:
        """One task's outputs for a batch x [B, ...]."""
        return self.forward_tasks(x, [task])[0]

    def forward_tasks(self, x: torch.Tensor, tasks: list[str | int] | None = None) -> list[torch.Tensor]:
        """Several tasks at once through one batched body; x is shared [B, ...] or per task [T', B, ...]."""
        indices = [self.task_index(t) for t in (tasks if tasks is not None else range(len(self.specs)))]
        specs = [self.specs[i] for i in indices]
        shared_input = x.dim() == len(specs[0].input_shape) + 1
        encoded, cache = [], {}
        for i, spec in enumerate(specs):
            key = self.encoder_key(spec)
            if not shared_input:
                encoded.append(self.encoders[key](x[i]))
            else:
                if key not in cache:  # tasks that share an encoder encode a shared batch once
                    cache[key] = self.encoders[key](x)
                encoded.append(cache[key])
        h = self.body(torch.stack(encoded), torch.tensor(indices, device=x.device))
        return [self.heads[spec.name](h[i]) for i, spec in enumerate(specs)]

    def usage(self, task: int) -> dict[str, torch.Tensor]:
        """For every parameter (full name), which elements task `task` uses."""
        spec = self.specs[task]
        usage = {f"body.{n}": u for n, u in self.body.usage(task).items()}
        for name, p in self.named_parameters():
            if name.startswith("encoders."):
                usage[name] = torch.full_like(p, name.split(".")[1] == self.encoder_key(spec), dtype=torch.bool)
            elif name.startswith("heads."):
                usage[name] = torch.full_like(p, name.split(".")[1] == spec.name, dtype=torch.bool)
        return usage

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

    def masks(self) -> dict[str, torch.Tensor]:
        """Per-task masks of the body's prunable weights, by full parameter name."""
        return {f"body.{n}": m for n, m in self.body.masks().items()}


def build_model(specs: list[TaskSpec], config) -> MultitaskNet:
    """A freshly initialised model, seeded by config.seed so equal configs give equal weights."""
    torch.manual_seed(config.seed)
    return MultitaskNet(specs, config.model, config.scheme)
