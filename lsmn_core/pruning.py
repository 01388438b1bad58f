"""Magnitude pruning procedures: IMP with rewinding (sparse sharing) and RSN2 (MANN).

IMP with rewinding, the sparse-sharing slides' Algorithm 1:

  optional multi-task warm-up (MTW):  theta_0 -> theta_w
  for each task t:
      M = 1
      repeat: rewind to theta_w; train k steps on t through theta * M; record dev metric of M;
              stop once density(M) <= S; else drop alpha of M's surviving weights with the lowest
              magnitude, globally over the body's weight matrices (biases and norms are never pruned)
      choose the round with the best dev metric (ties: the sparser)
  rewind to theta_w and install the chosen masks; multi-task training follows in the trainer.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from lsmn_core import routing
from lsmn_core.tasks import score


def prune_by_magnitude(weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                       rate: float) -> dict[str, torch.Tensor]:
    """Drop `rate` of the surviving weights with the smallest magnitude, ranked over all matrices."""
    names = list(masks)
    flat_mask = torch.cat([masks[n].flatten() for n in names])
    magnitude = torch.cat([weights[n].detach().abs().flatten() for n in names])
    n_prune = int(round(rate * flat_mask.sum().item()))
    if n_prune == 0:
        return masks
    scores = torch.where(flat_mask, magnitude, torch.full_like(magnitude, float("inf")))
    flat_mask = flat_mask.clone()
    flat_mask[torch.topk(scores, n_prune, largest=False).indices] = False
    pieces = flat_mask.split([masks[n].numel() for n in names])
    return {n: p.view_as(masks[n]) for n, p in zip(names, pieces)}


def keep_largest(weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], n_keep: int) -> dict:
    """Narrow `masks` to their `n_keep` surviving weights of largest magnitude (RSN2's cut)."""
    alive = sum(int(m.sum()) for m in masks.values())
    return prune_by_magnitude(weights, masks, max(0.0, 1 - n_keep / alive))


def density(masks: dict[str, torch.Tensor]) -> float:
    return sum(m.sum().item() for m in masks.values()) / sum(m.numel() for m in masks.values())


def find_subnetworks(session, options) -> dict:
    """Run Algorithm 1 on session.model (a sparse scheme); returns the search report for the run.

    The report's "summary" lists every round per task (density, dev metric, chosen round); its
    "arrays" hold every round's masks, bit-packed, for routing.safetensors.
    """
    model, body, specs = session.model, session.model.body, session.tasks.specs
    all_tasks = list(range(len(specs)))
    if options.warmup_steps:
        session.train(all_tasks, options.warmup_steps, "warm-up")
    theta_w = copy.deepcopy(model.state_dict())
    weights = dict(body.named_parameters())
    summary, round_masks = {}, {}
    for t, spec in enumerate(specs):
        mask = {name: torch.ones_like(m[t]) for name, m in body.masks().items()}
        rounds, kept = [], []
        while True:
            model.load_state_dict(theta_w)
            body.set_task_masks(t, mask)
            phase = f"prune {spec.name} r{len(rounds) + 1}"
            session.train([t], options.round_steps, phase, early_stopping=False)
            _, dev = session.evaluate(t, "dev")
            rounds.append({"round": len(rounds) + 1, "density": density(mask), "dev": dev})
            session.reporter.log([{"step": session.step, "phase": phase, "task": spec.name, "split": "dev",
                                   "metric": spec.metric, "value": dev, "density": rounds[-1]["density"]}])
            kept.append({n: m.clone() for n, m in mask.items()})
            if rounds[-1]["density"] <= options.min_density:
                break
            mask = prune_by_magnitude(weights, mask, options.prune_rate)
        best = max(range(len(rounds)), key=lambda i: (score(spec, rounds[i]["dev"]), -rounds[i]["density"]))
        summary[spec.name] = {"rounds": rounds, "chosen": rounds[best]["round"]}
        round_masks[spec.name] = kept
        body.set_task_masks(t, kept[best])
    model.load_state_dict(theta_w)
    return {"summary": {"pruning": summary}, "arrays": _pack_rounds(round_masks, specs)}


def _pack_rounds(round_masks: dict, specs) -> dict[str, np.ndarray]:
    """Every round's masks as `rounds.<task>.<parameter>`: [rounds, *shape], bit-packed."""
    arrays = {}
    for spec in specs:
        for name in round_masks[spec.name][0]:
            stacked = torch.stack([r[name] for r in round_masks[spec.name]]).cpu().numpy()
            arrays[f"rounds.{spec.name}.body.{name}"] = routing.pack(stacked)
    return arrays


def rsn2(session, options, tasks: list[int]) -> dict:
    """Reduction in Sub-Network Neuroplasticity (MANN): disjoint subnetworks, task by task.

    For each task: start from the weights no other task owns, train the task on them, then keep the
    `keep` fraction (of all body weights) with the largest magnitude, in one step or over `rounds`
    geometric steps, retraining after each cut. The task then owns its mask.
    """
    body, specs = session.model.body, session.tasks.specs
    others = [t for t in range(len(specs)) if t not in tasks]
    owned = {n: m[others].any(0) if others else torch.zeros_like(m[0]) for n, m in body.masks().items()}
    weights = dict(body.named_parameters())
    total = sum(m.numel() for m in owned.values())
    summary = {}
    for t in tasks:
        name = specs[t].name
        mask = {n: ~o for n, o in owned.items()}
        body.set_task_masks(t, mask)
        session.train([t], options.round_steps, f"rsn2 {name} free", early_stopping=False)
        free = density(mask)
        steps = options.rounds if options.schedule == "iterative" else 1
        targets = [free * (options.keep / free) ** ((i + 1) / steps) for i in range(steps)]
        for target in targets:
            mask = keep_largest(weights, mask, round(target * total))
            body.set_task_masks(t, mask)
            session.train([t], options.round_steps, f"rsn2 {name} {target:.3f}", early_stopping=False)
        _, dev = session.evaluate(t, "dev")
        summary[name] = {"density": density(mask), "free_before": free, "dev": dev}
        owned = {n: owned[n] | mask[n] for n in owned}
    return {"summary": {"rsn2": summary}}
