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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lsmn_core.errors import ConfigError, RoutingError
from lsmn_core.options import check
from lsmn_core.schemes.base import IsometricScheme


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


DISALLOWED = -1e9


def cv_squared(values: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation: 0 when every expert gets the same share."""
    return values.float().var() / (values.float().mean() ** 2 + 1e-10)


class Moe(IsometricScheme):
    kind = "moe"
    options_class = MoeOptions
    # buffers: the experts each task may use [T, L, E], and the gate statistics of the final evaluation
    allowed: torch.Tensor
    stats_usage: torch.Tensor
    stats_entropy: torch.Tensor
    stats_overflow: torch.Tensor
    stats_samples: torch.Tensor

    def __init__(self, options, n_tasks, depth, block):
        super().__init__(options, n_tasks, depth, block)
        if options.top_k > options.experts:
            raise ConfigError(f"scheme.top_k ({options.top_k}) exceeds scheme.experts ({options.experts})")
        if options.gate_input == "task" and not options.task_gate:
            raise ConfigError("scheme.gate_input 'task' routes by the per-task offset alone; "
                              "keep scheme.task_gate true")
        E = options.experts
        self.experts = nn.ModuleList(block.stacked(E) for _ in range(depth))
        sees = block.width if options.gate_input == "sample" else 0  # a task-level gate has no sample weights
        self.w_gate = nn.Parameter(torch.zeros(depth, sees, E))  # zero: uniform gates at the start
        self.w_noise = nn.Parameter(torch.zeros(depth, sees, E))
        self.gate_bias = nn.Parameter(torch.zeros(n_tasks, depth, E), requires_grad=options.task_gate)
        self.register_buffer("allowed", torch.ones(n_tasks, depth, E, dtype=torch.bool), persistent=False)
        self.register_buffer("stats_usage", torch.zeros(n_tasks, depth, E), persistent=False)
        self.register_buffer("stats_entropy", torch.zeros(n_tasks, depth), persistent=False)
        self.register_buffer("stats_overflow", torch.zeros(n_tasks, depth), persistent=False)
        self.register_buffer("stats_samples", torch.zeros(n_tasks, depth), persistent=False)
        self.aux_loss = torch.zeros(())

    def block_params(self, layer, tasks):
        """Expert e of block `layer` as a block of its own (axis 0 = experts, not tasks)."""
        return dict(self.experts[layer].items())

    def gate(self, h: torch.Tensor, rows_task: torch.Tensor, layer: int):
        """Gates [N, E] (k non-zero per row), and the importance/load auxiliary loss."""
        k, E = self.options.top_k, self.options.experts
        clean = h @ self.w_gate[layer] + self.gate_bias[rows_task, layer]  # h @ [0 x E] is 0 for a task-level gate
        # a disallowed expert gets a logit so low that its softmax weight is exactly 0, yet finite, so
        # the load estimator below never computes inf - inf
        clean = clean.masked_fill(~self.allowed[rows_task, layer], DISALLOWED)
        noisy, std = clean, None
        if self.training and self.options.noisy:
            std = F.softplus(h @ self.w_noise[layer]) + 1e-2  # log 2 + 1e-2 for a task-level gate
            noisy = clean + torch.randn_like(clean) * std
        top_values, top_index = noisy.topk(min(k + 1, E), dim=-1)
        gates = torch.zeros_like(clean).scatter(-1, top_index[:, :k], torch.softmax(top_values[:, :k], dim=-1))
        importance = gates.sum(0)
        if std is not None and k < E:
            in_top = noisy >= top_values[:, k - 1 : k]
            threshold = torch.where(in_top, top_values[:, k : k + 1], top_values[:, k - 1 : k])
            load = torch.special.ndtr((clean - threshold) / std).sum(0)
        else:
            load = (gates > 0).float().sum(0)
        aux = self.options.importance_weight * cv_squared(importance) + self.options.load_weight * cv_squared(load)
        return gates, aux

    def _limit_capacity(self, gates: torch.Tensor) -> torch.Tensor:
        """Keep at most ceil(capacity_factor * N * k / E) samples per expert (first come); returns the
        number of dropped assignments per row."""
        capacity = math.ceil(self.options.capacity_factor * gates.shape[0] * self.options.top_k / self.options.experts)
        routed = gates > 0
        over = routed & (routed.cumsum(0) > capacity)
        gates.masked_fill_(over, 0.0)
        return over.sum(-1)

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
        gates, aux = self.gate(seen, rows_task, layer)
        self.aux_loss = aux if layer == 0 else self.aux_loss + aux
        if self.options.capacity_factor:
            overflow = self._limit_capacity(gates)
        else:
            overflow = torch.zeros(len(x), dtype=torch.long, device=x.device)
        update = (self.every_expert_update if x.is_cuda else self.routed_update)(x, gates, layer, pad)
        if not self.training:
            self._record(gates.detach(), overflow, rows_task, layer)
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

    def _record(self, gates, overflow, rows_task, layer):
        p = gates.clamp_min(1e-12)
        entropy = -(gates * p.log()).sum(-1)
        for t in rows_task.unique():
            rows = rows_task == t
            self.stats_usage[t, layer] += (gates[rows] > 0).float().sum(0)
            self.stats_entropy[t, layer] += entropy[rows].sum()
            self.stats_overflow[t, layer] += overflow[rows].float().sum()
            self.stats_samples[t, layer] += rows.sum()

    def reset_statistics(self):
        for buffer in (self.stats_usage, self.stats_entropy, self.stats_overflow, self.stats_samples):
            buffer.zero_()

    def auxiliary_loss(self):
        """The importance and load losses of the latest forward, over all its rows (training only)."""
        return self.aux_loss if self.training else 0.0

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

    def update_masks(self, task):
        return {"gate_bias": self.task_rows(task, self.gate_bias)}

    def gate_statistics(self, task_names) -> dict:
        samples = self.stats_samples.clamp_min(1).cpu()
        return {t: {"usage": (self.stats_usage[i].cpu() / samples[i, :, None]).tolist(),
                    "entropy": (self.stats_entropy[i].cpu() / samples[i]).tolist(),
                    "overflow": (self.stats_overflow[i].cpu() / samples[i]).tolist()}
                for i, t in enumerate(task_names)}

    def routing_document(self, task_names):
        return {"experts": self.options.experts, "top_k": self.options.top_k,
                "allowed": {t: self.allowed[i].cpu().tolist() for i, t in enumerate(task_names)},
                "gate_stats": self.gate_statistics(task_names)}

    def parse_routing_document(self, doc, task_names):
        """`allowed`: per task, per layer, which experts the gate may choose (at least one)."""
        allowed = doc.get("allowed")
        if not isinstance(allowed, dict) or set(allowed) != set(task_names):
            raise RoutingError(f"routing needs 'allowed' experts for exactly the tasks {task_names}")
        shape = (self.depth, self.options.experts)
        rows = []
        for task in task_names:
            value = np.asarray(allowed[task], dtype=object)
            if value.shape != shape or not all(isinstance(v, bool) for v in value.flat):
                raise RoutingError(f"allowed experts of {task}: expected {shape[0]} layers x {shape[1]} true/false")
            value = value.astype(bool)
            if not value.any(-1).all():
                raise RoutingError(f"allowed experts of {task}: every layer needs at least one expert")
            rows.append(torch.from_numpy(value))
        return {"allowed": torch.stack(rows)}

    def load_routing(self, state):
        if "allowed" in state:
            self.allowed.copy_(state["allowed"])

    def routing_summary(self, task_names):
        stats = self.gate_statistics(task_names)
        return {"gate_stats": stats, "specialisation": specialisation(stats)}


def specialisation(gate_stats: dict) -> list[float]:
    """Per layer, the normalised mutual information between a sample's task and the experts the
    gate sends it to, 2 I(T; E) / (H(T) + H(E)), tasks weighted equally, each of a sample's k
    assignments counted: 0 when every task spreads over the experts alike (balanced, not
    specialised), higher as tasks keep to experts of their own. With k > 1 a task's own k experts
    leave log k of H(E) unexplained, so 1 is reached only at k = 1."""
    usage = np.array([stats["usage"] for stats in gate_stats.values()], dtype=float)  # [T, L, E]
    if usage.ndim != 3 or len(usage) < 2:
        return [0.0] * (usage.shape[1] if usage.ndim == 3 else 0)
    routed = usage.sum(-1, keepdims=True)
    joint = np.divide(usage, routed, out=np.zeros_like(usage), where=routed > 0) / len(usage)  # p(t, e) per layer
    result = []
    for layer in range(usage.shape[1]):
        p = joint[:, layer]
        p = p / p.sum() if p.sum() > 0 else p
        h_task, h_expert, h_joint = (_entropy(p.sum(1)), _entropy(p.sum(0)), _entropy(p.ravel()))
        mutual = h_task + h_expert - h_joint
        result.append(float(max(0.0, 2 * mutual / (h_task + h_expert))) if h_task + h_expert > 0 else 0.0)
    return result


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())
