"""The gates of a mixture of experts, shared by the Studio's own experts (Moe) and a checkpoint's
upcycled ones (upcycling.py): a noisy top-k gate per layer ("Outrageously Large Neural Networks:
The Sparsely-Gated Mixture-of-Experts Layer"), its importance and load losses, an optional capacity
limit, the experts each task may use (the editable routing), and the gate statistics of the final
evaluation (expert usage per task and layer, and how specialised each layer's experts are)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lsmn_core.errors import ConfigError, RoutingError

DISALLOWED = -1e9


def cv_squared(values: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation: 0 when every expert gets the same share."""
    return values.float().var() / (values.float().mean() ** 2 + 1e-10)


class ExpertGates(nn.Module):
    """A mixin of a SharingScheme with `options` (MoeOptions), `n_tasks` and `depth`: call
    start_gates in __init__, then route() each layer's rows."""

    options: Any  # MoeOptions
    n_tasks: int
    depth: int
    allowed: torch.Tensor  # the experts each task may use [T, L, E]
    stats_usage: torch.Tensor  # the gate statistics of the final evaluation
    stats_entropy: torch.Tensor
    stats_overflow: torch.Tensor
    stats_samples: torch.Tensor

    def start_gates(self, options, n_tasks: int, depth: int, sees: int) -> None:
        """Gates of `depth` layers over options.experts experts, each seeing rows of `sees` features
        (0: a task-level gate, by the task's offset alone)."""
        if options.top_k > options.experts:
            raise ConfigError(f"scheme.top_k ({options.top_k}) exceeds scheme.experts ({options.experts})")
        if options.gate_input == "task" and not options.task_gate:
            raise ConfigError("scheme.gate_input 'task' routes by the per-task offset alone; "
                              "keep scheme.task_gate true")
        E = options.experts
        self.w_gate = nn.Parameter(torch.zeros(depth, sees, E))  # zero: uniform gates at the start
        self.w_noise = nn.Parameter(torch.zeros(depth, sees, E))
        self.gate_bias = nn.Parameter(torch.zeros(n_tasks, depth, E), requires_grad=options.task_gate)
        self.register_buffer("allowed", torch.ones(n_tasks, depth, E, dtype=torch.bool), persistent=False)
        self.register_buffer("stats_usage", torch.zeros(n_tasks, depth, E), persistent=False)
        self.register_buffer("stats_entropy", torch.zeros(n_tasks, depth), persistent=False)
        self.register_buffer("stats_overflow", torch.zeros(n_tasks, depth), persistent=False)
        self.register_buffer("stats_samples", torch.zeros(n_tasks, depth), persistent=False)
        self.aux_loss = torch.zeros(())

    def route(self, seen: torch.Tensor, rows_task: torch.Tensor, layer: int) -> torch.Tensor:
        """Gates [N, E] of layer `layer` for rows that show the gate `seen` [N, sees], of tasks
        `rows_task` [N]: their auxiliary loss added to the forward's, the capacity limit applied, and
        in evaluation their statistics recorded."""
        gates, importance, load = self.gate_values(seen, rows_task, layer)
        self.add_balance(layer, importance, load)
        if self.options.capacity_factor:
            overflow = self._limit_capacity(gates)
        else:
            overflow = torch.zeros(len(seen), dtype=torch.long, device=seen.device)
        if not self.training:
            self._record(gates.detach(), overflow, rows_task, layer)
        return gates

    def add_balance(self, layer: int, importance: torch.Tensor, load: torch.Tensor) -> None:
        """Count a layer's importance and load [E] into the forward's auxiliary loss (a forward runs
        every task's rows at once: its loss balances them together)."""
        aux = self.balance_loss(importance, load)
        self.aux_loss = aux if layer == 0 else self.aux_loss + aux

    def balance_loss(self, importance: torch.Tensor, load: torch.Tensor) -> torch.Tensor:
        return self.options.importance_weight * cv_squared(importance) + self.options.load_weight * cv_squared(load)

    def gate(self, h: torch.Tensor, rows_task: torch.Tensor, layer: int):
        """Gates [N, E] (k non-zero per row), and the importance/load auxiliary loss."""
        gates, importance, load = self.gate_values(h, rows_task, layer)
        return gates, self.balance_loss(importance, load)

    def gate_values(self, h: torch.Tensor, rows_task: torch.Tensor, layer: int):
        """Gates [N, E] (k non-zero per row), their importance and their (smooth) load [E]."""
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
        return gates, importance, load

    def _limit_capacity(self, gates: torch.Tensor) -> torch.Tensor:
        """Keep at most ceil(capacity_factor * N * k / E) samples per expert (first come); returns the
        number of dropped assignments per row."""
        capacity = math.ceil(self.options.capacity_factor * gates.shape[0] * self.options.top_k / self.options.experts)
        routed = gates > 0
        over = routed & (routed.cumsum(0) > capacity)
        gates.masked_fill_(over, 0.0)
        return over.sum(-1)

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
