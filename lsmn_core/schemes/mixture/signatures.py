"""Signatures of compositional models: which template each task uses at each layer, how sure it is,
whether the order is "progressive", and what tasks share. Pure functions of mixture weights
{task: [L][K]} (as in routing.json's "signatures"), and the check of an edited one."""

from __future__ import annotations

import numpy as np
import torch

from lsmn_core.errors import RoutingError
from lsmn_core.store.files import json_integer


def hand_designed_order(kind: str, depth: int, templates: int) -> list[int]:
    """The paper's fixed signatures as one template index per layer.

    sequential: each template repeated depth/K times (f_1 f_1 f_2 f_2 ...); cyclic: (f_1 ... f_K)
    repeated; random: uniform per layer (from torch's RNG, which build_model seeds).
    """
    if kind == "sequential":
        return [min(layer * templates // depth, templates - 1) for layer in range(depth)]
    if kind == "cyclic":
        return [layer % templates for layer in range(depth)]
    return torch.randint(0, templates, (depth,), device="cpu").tolist()  # on the host even when built on meta


def argmax_signature(weights) -> list[int]:
    """The module order: the template with the largest weight at each layer."""
    return np.asarray(weights).argmax(-1).tolist()


def confidence(weights) -> list[float]:
    """Per layer, the largest mixture weight (1.0 = one-hot)."""
    return np.asarray(weights).max(-1).tolist()


def entropy(weights) -> list[float]:
    """Per layer, the entropy of the mixture weights in nats (0 = one-hot, log K = uniform)."""
    p = np.asarray(weights, dtype=np.float64)
    return (-(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)).tolist()


def runs(order: list[int]) -> list[tuple[int, int]]:
    """Run-length encoding of a module order: [(template, repeats), ...]."""
    encoded: list[list[int]] = []
    for template in order:
        if encoded and encoded[-1][0] == template:
            encoded[-1][1] += 1
        else:
            encoded.append([template, 1])
    return [(t, n) for t, n in encoded]


def is_progressive(order: list[int]) -> bool:
    """The paper's pattern: templates repeat in contiguous, uninterrupted runs (no template comes
    back after its run ends), and run lengths do not shrink with depth, growing at least once."""
    encoded = runs(order)
    templates = [t for t, _ in encoded]
    lengths = [n for _, n in encoded]
    contiguous = len(set(templates)) == len(templates)
    growing = all(a <= b for a, b in zip(lengths, lengths[1:])) and lengths[-1] > lengths[0]
    return len(encoded) >= 2 and contiguous and growing


def similarity(signatures: dict) -> np.ndarray:
    """[T, T] expected fraction of layers at which two tasks pick the same template:
    mean over layers of sum_k p_s,k * p_t,k (for one-hot signatures, the share of equal layers)."""
    stacked = np.stack([np.asarray(w, dtype=np.float64) for w in signatures.values()])  # [T, L, K]
    return np.einsum("slk,tlk->st", stacked, stacked) / stacked.shape[1]


def shared_layers(signatures: dict) -> list[dict]:
    """Per layer, the groups of tasks whose argmax template is the same: [{layer, groups: {k: [tasks]}}]."""
    orders = {task: argmax_signature(w) for task, w in signatures.items()}
    depth = len(next(iter(orders.values())))
    result = []
    for layer in range(depth):
        groups: dict[int, list[str]] = {}
        for task, order in orders.items():
            groups.setdefault(order[layer], []).append(task)
        result.append({"layer": layer, "groups": groups, "shared_by_all": len(groups) == 1})
    return result


def pair_sharing(signatures: dict, labels: dict[str, str], layers: range) -> float:
    """Of the pairs of tasks with equal labels (the same input domain, or the same target), the share
    of (pair, layer) in `layers` at which both pick the same template: the paper's self-organisation
    is domain pairs sharing early layers and target pairs late ones (chance: about 1/K)."""
    orders = {task: argmax_signature(w) for task, w in signatures.items()}
    tasks = list(orders)
    pairs = [(a, b) for i, a in enumerate(tasks) for b in tasks[i + 1:] if labels[a] == labels[b]]
    same = [orders[a][layer] == orders[b][layer] for a, b in pairs for layer in layers]
    return float(np.mean(same)) if same else float("nan")


def signature_report(signatures: dict) -> dict:
    """Everything the CLI and app show about signatures."""
    tasks = list(signatures)
    per_task = {}
    for task, weights in signatures.items():
        order = argmax_signature(weights)
        per_task[task] = {"order": order, "confidence": confidence(weights), "entropy": entropy(weights),
                          "runs": runs(order), "progressive": is_progressive(order)}
    templates = len(np.asarray(next(iter(signatures.values())))[0]) if signatures else 0
    return {"tasks": per_task, "similarity": similarity(signatures).tolist(),
            "shared_layers": shared_layers(signatures), "task_names": tasks, "templates": templates}


def parse_signatures(doc: dict, task_names: list[str], depth: int, templates: int) -> torch.Tensor:
    """The mixture weights [T, L, K] of a (possibly edited) routing document's "signatures": per
    task, full mixture weights [L][K] (finite, non-negative, each layer summing to 1) or a module
    order [L] of template indices (one-hot); RoutingError naming what is wrong."""
    signatures = doc.get("signatures")
    if not isinstance(signatures, dict) or set(signatures) != set(task_names):
        raise RoutingError(f"routing needs 'signatures' for exactly the tasks {task_names}")
    rows = []
    for task in task_names:
        entry = signatures[task]
        if isinstance(entry, list) and all(json_integer(v) for v in entry):
            if len(entry) != depth or not all(0 <= v < templates for v in entry):
                raise RoutingError(f"signature of {task}: a module order needs {depth} template indices in "
                                   f"0..{templates - 1}")
            rows.append(torch.nn.functional.one_hot(torch.tensor(entry), templates).double())
            continue
        try:
            weights = np.asarray(entry, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise RoutingError(f"signature of {task}: expected numbers") from None
        if weights.shape != (depth, templates):
            raise RoutingError(f"signature of {task}: expected {depth} layers x {templates} templates, got shape "
                               f"{list(weights.shape)}")
        if not np.all(np.isfinite(weights)) or (weights < 0).any():
            raise RoutingError(f"signature of {task}: weights must be finite and non-negative")
        if not np.allclose(weights.sum(-1), 1, atol=1e-3):
            raise RoutingError(f"signature of {task}: each layer's weights must sum to 1")
        rows.append(torch.from_numpy(weights))
    return torch.stack(rows)


def signature_summary(weights: torch.Tensor, task_names: list[str]) -> dict:
    """summary.json's report of mixture weights [T, L, K]: each task's template per layer and its weight."""
    return {"signatures": {t: weights[i].argmax(-1).tolist() for i, t in enumerate(task_names)},
            "confidence": {t: weights[i].max(-1).values.tolist() for i, t in enumerate(task_names)}}
