"""LoRA ("LoRA: Low-Rank Adaptation of Large Language Models") over a checkpoint's target weights:
the checkpoint stays frozen and each task learns, per target W [out, in], a low-rank update
(alpha / rank) * B A, B [out, rank] starting at zero and A [rank, in] at random, so each task starts
as the pretrained network. A convolution's A is a convolution of the target's kernel into `rank`
channels and B a 1 x 1 convolution out of them, as peft's LoRA layers make it.

The parameters, their initialisation and the scaling are peft's (`LoraConfig(r, lora_alpha)`, no
dropout, no bias), and a task's adapter is written as a peft adapter folder that peft loads over the
checkpoint without the Studio (`peft_adapter`). The forward does not use peft's layers: every task
runs through the one shared checkpoint, with its own value W + (alpha / rank) B A of each target put
in place by the network (`functional_call`), whereas peft's layers hold their adapters inside the
module and run one active adapter set per forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lsmn_core.errors import ConfigError
from lsmn_core.options import check
from lsmn_core.pretrained.network import Source, TargetScheme

ADAPTED_KINDS = ("Linear", "Conv2d")  # what peft's LoRA layers adapt with a plain weight [out, in, ...]


@dataclass
class LoraOptions:
    rank: int = check(lambda v: 0 < v <= 65536, "must be in 1 .. 65,536", 8)
    alpha: float = check(lambda v: 0 < v < 1e6, "must be > 0", 16.0)
    lr_scale: float = check(lambda v: 0 < v <= 1e3, "must be in (0, 1000]", 0.5)  # A and B train at train.lr x this


@dataclass
class AdapterOptions:
    lora: LoraOptions


def check_adaptable(module: nn.Module, targets: dict[str, int], rank: int, where: str) -> None:
    """Refuse (ConfigError, one line) a target LoRA cannot adapt: not a linear or 2-D convolution
    layer (GPT-2's Conv1D stores its weight transposed), a grouped convolution, or a rank larger than
    the target's smaller side."""
    modules = dict(module.named_modules())
    for name in targets:
        layer = modules[name.removesuffix(".weight")]
        kind = type(layer).__name__
        if kind not in ADAPTED_KINDS or getattr(layer, "groups", 1) != 1:
            raise ConfigError(f"{where}: LoRA adapts linear and ungrouped 2-D convolution weights; "
                              f"{name} is a {kind}{' with groups' if kind in ADAPTED_KINDS else ''}")
        shape = layer.weight.shape
        side = min(shape[0], math.prod(shape[1:]))
        if rank > side:
            raise ConfigError(f"{where}: rank {rank} is larger than {name}'s smaller side "
                              f"({' x '.join(map(str, shape))}: at most {side})")


class LoraAdapters(TargetScheme):
    """A LoRA adapter per task (see the module's docstring): per target, lora_A [T, rank, in, ...]
    and lora_B [T, out, rank, 1, ...], by the target's key."""

    def __init__(self, options, n_tasks: int, source: Source, config):
        super().__init__(options, n_tasks, source, config)
        lora = options.adapter.lora
        self.rank, self.alpha, self.lr_scale = lora.rank, lora.alpha, lora.lr_scale
        self.scaling = lora.alpha / lora.rank
        self.lora_A, self.lora_B = nn.ParameterDict(), nn.ParameterDict()
        for name, shape in self.targets.items():
            a = torch.empty(n_tasks, self.rank, *shape[1:])
            for task in range(n_tasks):  # peft's initialisation: A as nn.Linear's default, B at zero
                nn.init.kaiming_uniform_(a[task], a=math.sqrt(5))
            self.lora_A[self.key(name)] = nn.Parameter(a)
            self.lora_B[self.key(name)] = nn.Parameter(torch.zeros(n_tasks, shape[0], self.rank,
                                                                   *[1] * (len(shape) - 2)))

    @classmethod
    def choose_targets(cls, module, layers_path, layers, config):
        targets = super().choose_targets(module, layers_path, layers, config)
        check_adaptable(module, targets, config.scheme.adapter.lora.rank, "scheme.adapter.lora.rank")
        return targets

    def delta(self, task: int, name: str) -> torch.Tensor:
        """Task `task`'s update of target `name`: (alpha / rank) B A, in the target's shape."""
        key = self.key(name)
        a, b = self.lora_A[key][task], self.lora_B[key][task]
        return (b.flatten(1) @ a.flatten(1)).view(self.targets[name]) * self.scaling

    def task_weights(self, task, pretrained):
        return {name: pretrained[name] + self.delta(task, name) for name in self.targets}

    def usage(self, task):
        return {name: self.task_rows(task, p) for name, p in self.named_parameters()}

    def update_masks(self, task):
        return self.usage(task)

    def lr_scales(self):
        return {name: self.lr_scale for name, _ in self.named_parameters()}

    def peft_adapter(self, task: int, base: str) -> tuple[dict, dict[str, torch.Tensor]]:
        """Task `task`'s adapter as peft saves one: its adapter_config.json (over the checkpoint at
        `base`) and its weights by peft's names (base_model.model.<module>.lora_A.weight)."""
        modules = [name.removesuffix(".weight") for name in self.targets]
        config = {"peft_type": "LORA", "task_type": None, "base_model_name_or_path": base, "r": self.rank,
                  "lora_alpha": self.alpha, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
                  "target_modules": modules, "init_lora_weights": True, "use_rslora": False,
                  "use_dora": False, "inference_mode": True}
        weights = {}
        for name, module in zip(self.targets, modules):
            key = self.key(name)
            weights[f"base_model.model.{module}.lora_A.weight"] = self.lora_A[key][task].detach()
            weights[f"base_model.model.{module}.lora_B.weight"] = self.lora_B[key][task].detach()
        return config, weights
