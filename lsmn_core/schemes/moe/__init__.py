"""Sparsely gated mixture of experts, after "Outrageously Large Neural Networks: The Sparsely-Gated
Mixture-of-Experts Layer" (Shazeer et al. 2017), as the notes "Creating, Managing, and
Understanding Large, Sparse, Multitask Neural Networks" frame it: each layer holds E expert blocks,
and a noisy top-k gate sends every sample to k of them.

  H(x) = x W_g + b_task + N(0, 1) * softplus(x W_noise)   (noise only while training)
  G(x) = softmax(KeepTopK(H(x), k));   y = x + sum_i G_i(x) * branch_i(x)
Auxiliary losses: w_importance * CV(sum_x G(x))^2 and w_load * CV(Load)^2, with the paper's smooth
load estimator P(x, i) = Phi((clean_i - threshold_i) / noise_std_i). An optional capacity limit drops
the samples an expert cannot take (they keep the residual path). On a CPU samples are dispatched
only to the experts they are routed to; on a GPU every expert runs on every sample, weighted by the
gates (see layer_update). The editable routing is which experts each task may use per layer.

With `gate_input: task` the gate sees the task alone, as in "Beyond Distillation: Task-level
Mixture-of-Experts for Efficient Inference" (Kudugunta et al. 2021): H = b_task + N(0, 1), so all
of a task's samples share its k experts once trained (the noise explores while training). The
balancing losses, over batches that mix the tasks, then spread tasks over experts rather than the
samples of each task. `specialisation` measures which of the two a run learned, per layer.

The gates are shared with a pretrained checkpoint's upcycled experts (upcycling.py beside this file).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lsmn_core.options import check
from lsmn_core.schemes.base import IsometricScheme
from lsmn_core.schemes.moe.gates import ExpertGates
from lsmn_core.schemes.moe.upcycling import UpcycledExperts


@dataclass
class MoeOptions:
    kind: Literal["moe"] = "moe"
    experts: int = check(lambda v: 2 <= v <= 4096, "must be in 2 .. 4,096", 4)  # E per layer
    top_k: int = check(lambda v: v >= 1, "must be >= 1", 2)
    noisy: bool = True
    task_gate: bool = True  # add a learned per-task offset to the gate logits (a task embedding)
    gate_input: Literal["sample", "task"] = "sample"  # the gate sees the sample (and task offset), or the task only
    importance_weight: float = check(lambda v: v >= 0, "must be >= 0", 0.01)
    load_weight: float = check(lambda v: v >= 0, "must be >= 0", 0.01)
    capacity_factor: float = check(lambda v: v >= 0, "must be >= 0 (0: no limit)", 0.0)


class Moe(ExpertGates, IsometricScheme):
    kind = "moe"
    options_class = MoeOptions
    on_checkpoint = UpcycledExperts

    def __init__(self, options, n_tasks, depth, block):
        super().__init__(options, n_tasks, depth, block)
        self.start_gates(options, n_tasks, depth, block.width if options.gate_input == "sample" else 0)
        self.experts = nn.ModuleList(block.stacked(options.experts) for _ in range(depth))

    def block_params(self, layer, tasks):
        """Expert e of block `layer` as a block of its own (axis 0 = experts, not tasks)."""
        return dict(self.experts[layer].items())

    def layer_update(self, h, tasks, layer, padding=None):
        """The gated sum of the chosen experts' branches. On a CPU each sample runs only through its
        experts. On a GPU finding each expert's samples (nonzero) would make the host wait for the
        device E times per layer, so there every expert runs on every sample in one batched call,
        weighted by the gates, which are 0 off a sample's chosen experts: the same sum, E / k times the
        expert compute, no wait."""
        T, B, *activation = h.shape
        rows_task = tasks.repeat_interleave(B)
        x = h.reshape(T * B, *activation)
        pad = None if padding is None else padding.reshape(T * B, -1)  # per row, as x
        seen = self.block.summary(x) if self.options.gate_input == "sample" else x.new_zeros(len(x), 0)
        gates = self.route(seen, rows_task, layer)
        update = (self.every_expert_update if x.is_cuda else self.routed_update)(x, gates, layer, pad)
        return update.view(T, B, *activation)

    def routed_update(self, x: torch.Tensor, gates: torch.Tensor, layer: int,
                      padding: torch.Tensor | None = None) -> torch.Tensor:
        """Each expert's branch on the rows routed to it, gated and added at those rows."""
        update = torch.zeros_like(x)
        experts = self.experts[layer]
        for e in range(self.options.experts):
            rows = gates[:, e].nonzero().squeeze(1)
            if rows.numel():
                params = {n: p[e : e + 1] for n, p in experts.items()}
                out = self.block.branch(x[rows].unsqueeze(0), params,
                                        None if padding is None else padding[rows].unsqueeze(0))[0]
                update = update.index_add(0, rows, gates[rows, e].view(-1, *[1] * (out.dim() - 1)) * out)
        return update

    def every_expert_update(self, x: torch.Tensor, gates: torch.Tensor, layer: int,
                            padding: torch.Tensor | None = None) -> torch.Tensor:
        """Every expert's branch on every row (experts batched along axis 0), summed with the gates."""
        experts = self.options.experts
        out = self.block.branch(x.expand(experts, *x.shape), self.block_params(layer, None),
                                None if padding is None else padding.expand(experts, *padding.shape))
        return torch.einsum("ne,en...->n...", gates, out)

    def usage(self, task):
        usage = {}
        for name, p in self.named_parameters():
            if name.startswith("experts."):
                layer = int(name.split(".")[1])
                allowed = self.allowed[task, layer]
                usage[name] = allowed.view(-1, *[1] * (p.dim() - 1)).expand_as(p).clone()
            elif name == "gate_bias":
                usage[name] = self.task_rows(task, p)
            else:
                usage[name] = torch.ones_like(p, dtype=torch.bool)
        return usage
