"""Template mixtures, after the paper "Compositional Models: Multi-Task Learning and Knowledge
Transfer with Modular Networks": every block is a softmax mixture of K shared template blocks.

Block l of task t uses, for every weight and bias, sum_k softmax(xi[t, l])_k * theta_k. The per-task
logits xi are the task's signature; with a one-hot signature a block is exactly template k.
Parameters are generated once per batch (per layer, per task in the batch), never per sample.
Hand-designed signatures (sequential, cyclic, random) are fixed one-hot and not trained.

On a pretrained checkpoint the mixture is Polytropon (polytropon.py beside this file): the templates
are LoRA skills of the checkpoint's target weights, the signatures each task's allocation over them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lsmn_core.options import check
from lsmn_core.schemes.base import IsometricScheme, RoutingReport
from lsmn_core.errors import ConfigError
from lsmn_core.pretrained.lora import AdapterOptions
from lsmn_core.schemes.mixture.polytropon import PolytroponSkills
from lsmn_core.schemes.mixture.signature_routing import SignatureRouting
from lsmn_core.schemes.mixture.signatures import hand_designed_order, signature_report


@dataclass
class MixtureOptions:
    kind: Literal["mixture"] = "mixture"
    templates: int = check(lambda v: 1 <= v <= 4096, "must be in 1 .. 4,096", 4)  # K
    signature: Literal["learned", "sequential", "cyclic", "random"] = "learned"
    entropy_weight: float = check(lambda v: v >= 0, "must be >= 0", 0.0)  # pushes signatures to one-hot
    signature_lr_scale: float = check(lambda v: v > 0, "must be > 0", 20.0)  # xi's lr = train.lr * this
    mix_norm: bool = True  # mix the norms' affine parameters too; else each task has its own per layer
    adapter: AdapterOptions | None = None  # on a checkpoint: the skills' {lora: {rank, alpha, lr_scale}}


def one_hot_logits(order: list[int], templates: int) -> torch.Tensor:
    """Logits whose softmax is exactly one-hot: 0 for the chosen template, -inf elsewhere."""
    logits = torch.full((len(order), templates), -math.inf)
    logits[torch.arange(len(order)), torch.tensor(order)] = 0.0
    return logits


class Mixture(SignatureRouting, IsometricScheme):
    kind = "mixture"
    options_class = MixtureOptions
    on_checkpoint = PolytroponSkills

    @classmethod
    def check_config(cls, config) -> None:
        """Polytropon's skills need a checkpoint; its norms are the checkpoint's and it has no entropy term."""
        options, pretrained = config.scheme, config.model.pretrained is not None
        if options.adapter is not None and not pretrained:
            raise ConfigError("scheme.adapter: LoRA skills are for a pretrained network (model.pretrained)")
        if pretrained and (not options.mix_norm or options.entropy_weight):
            key = "mix_norm" if not options.mix_norm else "entropy_weight"
            raise ConfigError(f"scheme.{key}: not on a pretrained network (Polytropon: its norms are the "
                              "checkpoint's, its allocations have no entropy term)")

    def __init__(self, options, n_tasks, depth, block):
        super().__init__(options, n_tasks, depth, block)
        K = options.templates
        templates = block.stacked(K)
        own = () if options.mix_norm else block.norms()
        self.templates = nn.ParameterDict({n: p for n, p in templates.items() if n not in own})
        if own:  # each task its own norms per layer, starting as the block's (norms start alike: 1 and 0)
            self.norms = nn.ParameterDict({n: nn.Parameter(templates[n][0].detach().expand(
                n_tasks, depth, *templates[n].shape[1:]).clone()) for n in own})
        if options.signature == "learned":
            xi = 0.01 * torch.randn(n_tasks, depth, K)  # near-uniform, symmetry broken
        else:
            order = hand_designed_order(options.signature, depth, K)
            xi = one_hot_logits(order, K).expand(n_tasks, depth, K).clone()
        self.xi = nn.Parameter(xi, requires_grad=options.signature == "learned")

    def mixture_weights(self) -> torch.Tensor:
        """softmax(xi): [T, L, K], each row sums to 1."""
        return torch.softmax(self.xi, dim=-1)

    def logits_of(self, weights):
        return weights.log().float()  # log 0 = -inf keeps exact zeros

    def block_params(self, layer, tasks):
        weights = torch.softmax(self.xi[tasks, layer], dim=-1)  # [T', K]
        params = {name: (weights @ theta.flatten(1)).view(len(tasks), *theta.shape[1:])
                  for name, theta in self.templates.items()}
        if not self.options.mix_norm:
            params.update({name: p[tasks, layer] for name, p in self.norms.items()})
        return params

    def per_task_norms(self):
        return [] if self.options.mix_norm else [f"norms.{name}" for name in self.norms]

    def lr_scales(self):
        return {"xi": self.options.signature_lr_scale}

    def penalty(self, task):
        """Entropy of the task's mixture weights, averaged over layers, times entropy_weight."""
        if not self.options.entropy_weight or not self.xi.requires_grad:
            return 0.0
        p = torch.softmax(self.xi[task], dim=-1)
        entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean()
        return self.options.entropy_weight * entropy

    def usage(self, task):
        """Templates with non-zero weight at some layer (all of them for a soft signature)."""
        used = (self.mixture_weights()[task] > 0).any(0)  # [K]
        usage = {f"templates.{n}": used.view(-1, *[1] * (t.dim() - 1)).expand_as(t).clone()
                 for n, t in self.templates.items()}
        usage["xi"] = self.task_rows(task, self.xi)
        if not self.options.mix_norm:
            usage.update({f"norms.{n}": self.task_rows(task, p) for n, p in self.norms.items()})
        return usage

    def update_masks(self, task):
        restrict = {"xi": self.task_rows(task, self.xi)}
        if not self.options.mix_norm:
            restrict.update({f"norms.{n}": self.task_rows(task, p) for n, p in self.norms.items()})
        return restrict

    @classmethod
    def routing_report(cls, doc, task_names):
        """Each task's module order, how sure it is and whether it is progressive; the tasks that share
        a template at each layer; how similar the signatures are."""
        report = signature_report(doc["signatures"])
        data = {"signatures": {t: {k: r[k] for k in ("order", "confidence", "progressive")}
                               for t, r in report["tasks"].items()},
                "signature_similarity": report["similarity"],
                "shared_layers": [{str(k): v for k, v in layer["groups"].items()} for layer in report["shared_layers"]]}
        lines = ["signatures (template per layer; * = progressive; confidence = mean max weight):"]
        for task, signature in data["signatures"].items():
            mark = "*" if signature["progressive"] else " "
            mean = sum(signature["confidence"]) / len(signature["confidence"])
            lines.append(f"  {task:<16}{mark} {' '.join(map(str, signature['order']))}   confidence {mean:.2f}")
        lines.append("tasks sharing a template, per layer:")
        for layer, groups in enumerate(data["shared_layers"]):
            shared = [f"{k}: {', '.join(tasks)}" for k, tasks in groups.items() if len(tasks) > 1]
            lines.append(f"  layer {layer}: {' | '.join(shared) or '-'}")
        return RoutingReport(data, lines)
