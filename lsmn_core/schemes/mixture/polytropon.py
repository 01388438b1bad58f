"""Polytropon ("Combining Modular Skills in Multitask Learning"): the mixture scheme on a pretrained
checkpoint. Every target weight has an inventory of K LoRA skills (A_k, B_k of rank r, as
lsmn_core.pretrained.lora makes one adapter), and each task a learned allocation over them per
layer: logits xi [T, L, K]. In training the allocation is a relaxed Bernoulli sample of
sigmoid(xi) (temperature 1, the paper's Gumbel-sigmoid), in evaluation sigmoid(xi) itself; either
way normalised to sum to 1 over the skills. Task t's adapter of a target in layer l is
A = sum_k z_k A_k, B = sum_k z_k B_k with z its normalised allocation there, and its weight
W + (alpha / r) B A. The allocation is the task's signature: the Signatures page shows it, the
routing editor sets it (a module order becomes a near one-hot allocation), retraining the routing
learns it alone, and a new task transfers by learning its allocation over the trained skills.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.distributions import RelaxedBernoulli

from lsmn_core.pretrained.lora import LoraOptions, check_adaptable
from lsmn_core.pretrained.network import Source, TargetScheme
from lsmn_core.pretrained.rows import by_task, linear_modules
from lsmn_core.schemes.mixture.signature_routing import SignatureRouting
from lsmn_core.schemes.mixture.signatures import hand_designed_order

LOGIT = 12.0  # an allocation set by hand: sigmoid(12) = 0.999994 for a chosen skill, sigmoid(-12) for the rest
TEMPERATURE = 1.0  # the relaxed Bernoulli's, as the paper's code


def lora_of(options) -> LoraOptions:
    """The skills' rank, alpha and learning rate: the scheme's adapter, or LoRA's defaults."""
    return options.adapter.lora if options.adapter is not None else LoraOptions()


class PolytroponSkills(SignatureRouting, TargetScheme):
    kind = "mixture"

    def __init__(self, options, n_tasks: int, source: Source, config):
        super().__init__(options, n_tasks, source, config)
        lora, skills = lora_of(options), options.templates
        self.rank, self.scaling, self.lr_scale = lora.rank, lora.alpha / lora.rank, lora.lr_scale
        self.lora_A, self.lora_B = nn.ParameterDict(), nn.ParameterDict()
        for name, shape in self.targets.items():
            a = torch.empty(skills, self.rank, *shape[1:])
            for skill in range(skills):  # each skill starts as a LoRA adapter does: A at random, B at zero
                nn.init.kaiming_uniform_(a[skill], a=math.sqrt(5))
            self.lora_A[self.key(name)] = nn.Parameter(a)
            self.lora_B[self.key(name)] = nn.Parameter(torch.zeros(skills, shape[0], self.rank,
                                                                   *[1] * (len(shape) - 2)))
        if options.signature == "learned":
            xi = torch.empty(n_tasks, self.depth, skills).uniform_(-1e-3, 1e-3)  # the paper's start: all near 1/2
        else:  # a hand-designed signature: one skill per layer, fixed
            order = torch.tensor(hand_designed_order(options.signature, self.depth, skills))
            xi = (nn.functional.one_hot(order, skills).float() * 2 - 1).expand(n_tasks, -1, -1) * LOGIT
        self.xi = nn.Parameter(xi.clone(), requires_grad=options.signature == "learned")

    @classmethod
    def choose_targets(cls, module, layers_path, layers, config):
        targets = super().choose_targets(module, layers_path, layers, config)
        check_adaptable(module, targets, lora_of(config.scheme).rank, "scheme.adapter.lora.rank")
        return targets

    def allocation(self, task: int) -> torch.Tensor:
        """Task `task`'s normalised allocation over the skills [L, K]: sampled in training, else sigmoid."""
        logits = self.xi[task]
        if self.training and self.xi.requires_grad:
            z = RelaxedBernoulli(torch.tensor(TEMPERATURE, device=logits.device), logits=logits).rsample()
        else:
            z = torch.sigmoid(logits)
        return z / (z.sum(-1, keepdim=True) + 1e-12)

    def mixture_weights(self) -> torch.Tensor:
        """Every task's allocation in evaluation [T, L, K], each row summing to 1."""
        z = torch.sigmoid(self.xi)
        return z / (z.sum(-1, keepdim=True) + 1e-12)

    def delta(self, name: str, weights: torch.Tensor) -> torch.Tensor:
        """The update of target `name` by the skills mixed with `weights` [K]: (alpha / r) B A."""
        key = self.key(name)
        a = (weights @ self.lora_A[key].flatten(1)).view(self.rank, -1)
        b = (weights @ self.lora_B[key].flatten(1)).view(-1, self.rank)
        return (b @ a).view(self.targets[name]) * self.scaling

    def row_forwards(self, tasks, network):
        """Each target linear layer's output plus (alpha / r) x A_t^T B_t^T, with each row's own task's
        skills mixed (the same as its weight W + (alpha / r) B_t A_t, without building it per task);
        None where a target is not a linear layer's weight."""
        modules = linear_modules(self.targets, network)
        if modules is None:
            return None
        z = torch.stack([self.allocation(task) for task in tasks])  # [T', L, K], sampled once per task
        return {module: self.mixed_forward(linear, name, z[:, self.target_layers[name]])
                for module, (name, linear) in modules.items()}

    def mixed_forward(self, linear: nn.Linear, name: str, weights: torch.Tensor) -> Callable:
        """`linear`'s forward on rows grouped by task, each group through its task's skills mixed by
        its row of `weights` [T', K]."""
        key = self.key(name)
        a = torch.einsum("tk,kri->tir", weights, self.lora_A[key])  # [T', in, r]
        b = torch.einsum("tk,kor->tro", weights, self.lora_B[key])  # [T', r, out]

        def forward(x: torch.Tensor) -> torch.Tensor:
            low = (by_task(x, len(weights)).to(a.dtype) @ a) @ b
            return nn.functional.linear(x, linear.weight, linear.bias) + self.scaling * low.reshape(*x.shape[:-1], -1)
        return forward

    def task_weights(self, task, pretrained):
        z = self.allocation(task)
        return {name: pretrained[name] + self.delta(name, z[self.target_layers[name]]) for name in self.targets}

    def usage(self, task):
        usage = super().usage(task)  # every skill: a sigmoid allocation is never exactly 0
        usage["xi"] = self.task_rows(task, self.xi)
        return usage

    def update_masks(self, task):
        return {"xi": self.task_rows(task, self.xi)}

    def lr_scales(self):
        scales = {name: self.lr_scale for name, _ in self.named_parameters() if name.startswith("lora_")}
        return {**scales, "xi": self.options.signature_lr_scale}

    def logits_of(self, weights):
        """Logits whose normalised sigmoid gives the weights back, a weight of 1 or 0 held at +-LOGIT."""
        return torch.logit(weights).clamp(-LOGIT, LOGIT).float()
