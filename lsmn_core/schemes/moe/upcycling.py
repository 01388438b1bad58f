"""Sparse upcycling ("Sparse Upcycling: Training Mixture-of-Experts from Dense Checkpoints"): the moe
scheme on a pretrained checkpoint. Each layer's feed-forward sub-network (its feed-forward in and out
linear layers, W2 act(W1 x)) is copied into E experts that start as the checkpoint's own (each a
delta of both weights, from zero), and a noisy top-k gate per layer (the Studio's own moe gate: a
task offset, the balance losses, the capacity limit, the experts each task may use) sends every
token to k of them: y = sum_i G_i(x) W2_i act(W1_i x) + b2.

The checkpoint's feed-forward block is left as it is written: while a task runs, the in layer's
forward gives each token's pre-activations for its chosen experts side by side ([..., E x hidden],
zeros for the others: the activations this works with, GELU, ReLU, SiLU, keep 0 at 0), and the out
layer's forward mixes what comes back by the gates. Biases and norms stay the checkpoint's.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from lsmn_core.errors import ConfigError
from lsmn_core.pretrained.checkpoint import find_targets, module_kind
from lsmn_core.pretrained.network import Source, TargetScheme
from lsmn_core.schemes.moe.gates import ExpertGates

FEED_FORWARD = ("feed-forward in", "feed-forward out")


def feed_forward_pairs(targets: dict[str, int], depth: int) -> list[tuple[str, str]]:
    """Each layer's (in, out) feed-forward weights among `targets`; ConfigError naming a layer that
    has not exactly one of each."""
    pairs = []
    for layer in range(depth):
        found = {kind: [n for n, at in targets.items() if at == layer and module_kind(n) == kind]
                 for kind in FEED_FORWARD}
        if any(len(names) != 1 for names in found.values()):
            counts = ", ".join(f"{len(names)} {kind}" for kind, names in found.items())
            raise ConfigError(f"model.targets: upcycling needs one feed-forward in and one out linear layer per layer "
                              f"(W2 act(W1 x)); layer {layer} has {counts}")
        pairs.append((found[FEED_FORWARD[0]][0], found[FEED_FORWARD[1]][0]))
    return pairs


class UpcycledExperts(ExpertGates, TargetScheme):
    kind = "moe"

    def __init__(self, options, n_tasks: int, source: Source, config):
        super().__init__(options, n_tasks, source, config)
        self.pairs = feed_forward_pairs(self.target_layers, self.depth)
        first = self.targets[self.pairs[0][0]]
        self.start_gates(options, n_tasks, self.depth, first[1] if options.gate_input == "sample" else 0)
        self.deltas = nn.ParameterDict({self.key(name): nn.Parameter(torch.zeros(options.experts, *shape))
                                        for name, shape in self.targets.items()})
        self.pending: list[list[torch.Tensor]] = [[] for _ in range(self.depth)]  # a step's importance and load

    @classmethod
    def choose_targets(cls, module, layers_path, layers, config):
        """The feed-forward in and out linear layers of each layer (of the config's targets, if named)."""
        found = find_targets(layers_path, layers, config.model.targets)
        modules = dict(module.named_modules())
        chosen = {name: layer for name, layer in found.items() if module_kind(name) in FEED_FORWARD
                  and type(modules[name.removesuffix(".weight")]).__name__ == "Linear"}
        feed_forward_pairs(chosen, len(layers))
        return chosen

    def task_weights(self, task, pretrained):
        return {}  # the experts act through module_forwards

    def row_forwards(self, tasks, network):
        return None  # each task's gates route inside the replaced modules: the tasks run in turn

    def module_forwards(self, task, network, padding):
        forwards = {}
        for layer, (first, second) in enumerate(self.pairs):
            gates: dict[str, torch.Tensor] = {}  # the layer's, from its in layer to its out layer
            into, out = first.removesuffix(".weight"), second.removesuffix(".weight")
            forwards[into] = self._expand(task, layer, cast(nn.Linear, network.get_submodule(into)), first, padding,
                                          gates)
            forwards[out] = self._mix(cast(nn.Linear, network.get_submodule(out)), second, gates)
        return forwards

    def _expand(self, task: int, layer: int, linear: nn.Linear, name: str, padding: torch.Tensor | None,
                gates: dict[str, torch.Tensor]):
        """The in layer's forward: route each real token, then its pre-activations for its experts."""
        experts = self.options.experts

        def forward(x: torch.Tensor) -> torch.Tensor:
            flat = x.reshape(-1, x.shape[-1])
            real = torch.arange(len(flat), device=x.device)
            if padding is not None and padding.numel() == len(flat):
                real = (~padding.reshape(-1)).nonzero().squeeze(1)
            seen = flat[real] if self.options.gate_input == "sample" else flat.new_zeros(len(real), 0)
            chosen = self.route(seen, torch.full((len(real),), task, device=x.device), layer)
            gates["of"] = flat.new_zeros(len(flat), experts).index_copy(0, real, chosen.to(flat.dtype))
            hidden = self.targets[name][0]
            out = flat.new_zeros(len(flat), experts * hidden)
            for e in range(experts):
                rows = gates["of"][:, e].nonzero().squeeze(1)
                if rows.numel():
                    weight = linear.weight + self.deltas[self.key(name)][e]
                    out[rows, e * hidden:(e + 1) * hidden] = F.linear(flat[rows], weight, linear.bias)
            return out.view(*x.shape[:-1], experts * hidden)
        return forward

    def _mix(self, linear: nn.Linear, name: str, gates: dict[str, torch.Tensor]):
        """The out layer's forward: each expert's output at its tokens, weighted by the gates."""
        experts = self.options.experts

        def forward(u: torch.Tensor) -> torch.Tensor:
            flat = u.reshape(-1, u.shape[-1])
            hidden, out = flat.shape[1] // experts, self.targets[name][0]
            mixed = flat.new_zeros(len(flat), out)
            for e in range(experts):
                rows = gates["of"][:, e].nonzero().squeeze(1)
                if rows.numel():
                    weight = linear.weight + self.deltas[self.key(name)][e]
                    y = F.linear(flat[rows, e * hidden:(e + 1) * hidden], weight)
                    mixed = mixed.index_add(0, rows, gates["of"][rows, e:e + 1] * y)
            if linear.bias is not None:
                mixed = mixed + linear.bias
            return mixed.view(*u.shape[:-1], out)
        return forward

    def add_balance(self, layer, importance, load):
        """Tasks run one after another through a checkpoint: a step's importance and load add up over
        them, and its loss balances them together (auxiliary_loss), as the moe gate of one forward does."""
        if self.training:
            self.pending[layer].append(torch.stack([importance, load]))

    def auxiliary_loss(self):
        sums = [torch.stack(parts).sum(0) for parts in self.pending if parts]
        self.pending = [[] for _ in range(self.depth)]
        if not self.training or not sums:
            return 0.0
        return sum(self.balance_loss(importance, load) for importance, load in sums)

    def usage(self, task):
        usage = super().usage(task)
        for name in self.targets:
            allowed = self.allowed[task, self.target_layers[name]]
            usage[f"deltas.{self.key(name)}"] = allowed.view(-1, *[1] * len(self.targets[name])).expand(
                -1, *self.targets[name]).clone()
        usage["gate_bias"] = self.task_rows(task, self.gate_bias)
        return usage

    def lr_scales(self):
        return {f"deltas.{key}": self.finetune_lr_scale for key in self.deltas}
