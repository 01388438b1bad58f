"""RSN2 (Reduction in Sub-Network Neuroplasticity), MANN's pruning in the post "Creating Sparse,
Multitask Neural Networks": disjoint task subnetworks in shared layers, found task by task on the
weights no other task owns.
"""

from __future__ import annotations

import torch

from lsmn_core.schemes.magnitude import density, keep_largest
from lsmn_core.schemes.masked import MaskedScheme
from lsmn_core.training.session import Phase, SearchReport, Session


def rsn2(session: Session, body: MaskedScheme, tasks: list[int]) -> SearchReport:
    """Reduction in Sub-Network Neuroplasticity (MANN): disjoint subnetworks, task by task.

    For each task: start from the weights no other task owns, train the task on them, then keep the
    `keep` fraction (of all body weights) with the largest magnitude, in one step or over `rounds`
    geometric steps, retraining after each cut. The task then owns its mask.
    """
    specs, options = session.tasks.specs, body.options
    others = [t for t in range(len(specs)) if t not in tasks]
    owned = {n: m[others].any(0) if others else torch.zeros_like(m[0]) for n, m in body.masks().items()}
    weights = dict(body.named_parameters())
    total = sum(m.numel() for m in owned.values())
    summary = {}
    for t in tasks:
        name = specs[t].name
        mask = {n: ~o for n, o in owned.items()}
        body.set_task_masks(t, mask)
        session.train(Phase(f"rsn2 {name} free", [t], options.round_steps, early_stopping=False))
        free = density(mask)
        steps = options.rounds if options.schedule == "iterative" else 1
        targets = [free * (options.keep / free) ** ((i + 1) / steps) for i in range(steps)]
        for target in targets:
            mask = keep_largest(weights, mask, round(target * total))
            body.set_task_masks(t, mask)
            session.train(Phase(f"rsn2 {name} {target:.3f}", [t], options.round_steps, early_stopping=False))
        _, dev = session.evaluate(t, "dev")
        summary[name] = {"density": density(mask), "free_before": free, "dev": dev}
        owned = {n: owned[n] | mask[n] for n in owned}
    return SearchReport({"rsn2": summary})
