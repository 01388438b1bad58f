"""MUiR's alignment search: the decomposed (1+lambda)-EA interleaved with backpropagation.

Each generation picks a share of the block locations; each picked location gets lambda challengers:
with probability `new_probability` a freshly initialised unused hypermodule, otherwise one already in
use (`proportional`: the hypermodule at another random location, so frequently used hypermodules are
drawn more often, as in the poster's second theorem; `uniform`: each hypermodule in use alike). The
generation trains for `generation_steps` (one batch per task per step, losses summed) with every
picked location using the softmax(s_l)-weighted mix of its incumbent and challengers (equation 4).
Weights learn from training batches; s learns, at its own rate, from batches of `score_split`
(default: the held-out dev data, so a candidate that only fits its own training samples, such as a
hypermodule used by one task alone, does not win). Then each location keeps its highest-weighted
candidate. The alignment with the lowest validation
loss is kept and reloaded (with its weights) before the final training phase.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch

from lsmn_core.training.session import Phase, SearchReport, Session

if TYPE_CHECKING:  # the hypermodules call this search
    from lsmn_core.schemes.hyper.hypermodules import Hypermodules


def sample_challengers(alignment: list[int], n_hypermodules: int, options, rng: np.random.RandomState):
    """(candidates [L, 1 + lambda], active [L, 1 + lambda], fresh hypermodule indices) for a generation."""
    L, lam = len(alignment), options.challengers
    candidates = np.repeat(np.asarray(alignment)[:, None], 1 + lam, axis=1)
    active = np.zeros((L, 1 + lam), dtype=bool)
    active[:, 0] = True
    in_use = sorted(set(alignment))
    unused = sorted(set(range(n_hypermodules)) - set(in_use), reverse=True)
    fresh = []
    picked = rng.choice(L, size=max(1, round(options.optimize_fraction * L)), replace=False)
    for loc in picked:
        others = [k for k in in_use if k != alignment[loc]]
        for i in range(1, 1 + lam):
            if unused and rng.rand() < options.new_probability:
                k = unused.pop()
                fresh.append(k)
            elif not others:
                continue
            elif options.sampling == "proportional":
                k = alignment[rng.randint(L)]
                while k == alignment[loc]:  # another location's hypermodule, not the incumbent
                    k = alignment[rng.randint(L)]
            else:
                k = others[rng.randint(len(others))]
            candidates[loc, i], active[loc, i] = k, True
    return torch.from_numpy(candidates), torch.from_numpy(active), fresh


def validation_loss(session) -> float:
    return float(np.mean([loss for loss, _ in session.evaluate_each(list(range(len(session.tasks.specs))), "dev")]))


def evolve_alignment(session: Session, body: Hypermodules) -> SearchReport:
    """Run the generations of `body` (the session's model's), keep the best alignment by validation
    loss; returns the search report."""
    model, options = session.model, body.options
    rng = np.random.RandomState(session.config.seed)
    tasks = list(range(len(session.tasks.specs)))

    def record(generation: int, changed: int, loss: float) -> None:
        body.history.append({"generation": generation, "dev_loss": loss, "changed": changed,
                             "alignment": body.alignment_of(model.task_names)})
        session.reporter.progress("search", generation, options.generations, f"dev loss {loss:.4f}", force=True)

    loss = validation_loss(session)
    body.history = []
    record(0, 0, loss)
    best = (loss, 0, body.alignment.clone(), copy.deepcopy(model.state_dict()))
    for generation in range(1, options.generations + 1):
        candidates, active, fresh = sample_challengers(body.alignment.tolist(), body.n_hypermodules, options, rng)
        body.reset_hypermodules(fresh)
        body.begin_generation(candidates, active)
        scores = body.generation()[3]
        score_optimizer = torch.optim.Adam([scores], lr=options.score_lr)

        def learn_scores(optimizer: torch.optim.Optimizer = score_optimizer, scores: torch.Tensor = scores) -> None:
            loss = session.step_loss(tasks, options.score_split)
            (scores.grad,) = torch.autograd.grad(loss, [scores])
            optimizer.step()

        session.train(Phase(f"search {generation}/{options.generations}", tasks, options.generation_steps,
                            sampling="all", early_stopping=False, after_step=learn_scores))
        changed = body.end_generation()
        loss = validation_loss(session)
        record(generation, changed, loss)
        if loss < best[0]:
            best = (loss, generation, body.alignment.clone(), copy.deepcopy(model.state_dict()))
    best_loss, best_generation, alignment, state = best
    model.load_state_dict(state)
    body.alignment.copy_(alignment)
    return SearchReport({"best_generation": best_generation, "best_dev_loss": best_loss,
                         "generations": options.generations})
