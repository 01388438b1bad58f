"""Sparse sharing on a pretrained checkpoint: task t uses its own mask of every target weight.

- `masks: magnitude` (the default): per-task subnetworks by iterative magnitude pruning with
  rewinding, as "Learning Sparse Sharing Architectures for Multiple Tasks" finds them on the
  Studio's own body, here rewound to the pretrained values (or to a multi-task warm-up's, with
  warmup_steps); then every task trains under its mask, one delta of the targets shared by all.
- `masks: learned`: Piggyback ("Piggyback: Adapting a Single Network to Multiple Tasks by Learning
  to Mask Weights"): the pretrained weights stay frozen, and each task learns real-valued scores
  per weight, thresholded into its mask in the forward pass, with the gradient passed straight
  through the threshold; once learned, only the binary mask is kept (one bit per weight).

Each task's mask is searched with the task alone, one task after another, so the search holds one
task's scores or subnetwork at a time.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from lsmn_core.data.tasks import score
from lsmn_core.pretrained.masked_deltas import MaskedDeltas
from lsmn_core.pretrained.network import PretrainedNet, Source
from lsmn_core.schemes.magnitude import density, prune_by_magnitude
from lsmn_core.schemes.base import SharingScheme
from lsmn_core.schemes.sparse.imp import round_record
from lsmn_core.training.session import Phase, SearchReport, Session


def thresholded(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Piggyback's mask: 1 where the score is above the threshold, with the gradient of the mask
    passed to the scores as it is (straight through)."""
    hard = (scores > threshold).to(scores.dtype)
    return hard + scores - scores.detach()


class SparseTargets(MaskedDeltas):
    kind = "sparse"

    def __init__(self, options, n_tasks: int, source: Source, config):
        self.learned = options.masks == "learned"
        super().__init__(options, n_tasks, source, config, deltas=not self.learned)  # IMP's masks share a fine-tune
        self.searching: int | None = None  # the task whose mask is being learned (its scores exist meanwhile)

    def task_weights(self, task, pretrained):
        if self.searching == task:
            return {name: pretrained[name] * thresholded(self.scores[self.key(name)], self.options.threshold)
                    for name in self.targets}
        if self.learned:
            masks = self.task_masks(task)
            return {name: pretrained[name] * masks[name] for name in self.targets}
        return super().task_weights(task, pretrained)

    def usage(self, task):
        return SharingScheme.usage(self, task) if self.learned else super().usage(task)  # no delta: masks only

    def update_masks(self, task):
        return {} if self.learned else super().update_masks(task)

    def lr_scales(self):
        if self.searching is not None:
            return {f"scores.{self.key(name)}": self.options.score_lr_scale for name in self.targets}
        return {} if self.learned else super().lr_scales()

    def search_routing(self, session: Session) -> SearchReport:
        return self._learn_masks(session) if self.learned else self._prune(session)

    def _learn_masks(self, session: Session) -> SearchReport:
        """Piggyback, task by task: scores start at `score_init` (every weight kept), train with the
        task's head for `mask_steps`, and become the task's mask."""
        specs, summary = session.tasks.specs, {}
        for task, spec in enumerate(specs):
            self.scores = nn.ParameterDict({self.key(name): nn.Parameter(torch.full(shape, self.options.score_init,
                                                                                    device=self._device()))
                                            for name, shape in self.targets.items()})
            self.searching = task
            session.train(Phase(f"mask {spec.name}", [task], self.options.mask_steps))
            with torch.no_grad():
                masks = {name: self.scores[self.key(name)] > self.options.threshold for name in self.targets}
            self.set_task_masks(task, masks)
            del self.scores
            self.searching = None
            summary[spec.name] = {"density": density(masks), "step": session.step}
        return SearchReport({"masks": summary})

    def _prune(self, session: Session) -> SearchReport:
        """Iterative magnitude pruning with rewinding, task by task: the task trains alone from the
        rewind point for round_steps, loses prune_rate of its surviving weights by the magnitude of
        its trained weights (ranked over every target), and is rewound, until its density reaches
        min_density; the round of best dev metric (the sparser of equals) gives its mask."""
        options, specs, model = self.options, session.tasks.specs, session.model
        if not isinstance(model, PretrainedNet):
            raise TypeError(f"the sparse scheme's targets are a checkpoint's, not a {type(model).__name__}'s")
        if options.warmup_steps:
            session.train(Phase("warm-up", list(range(len(specs))), options.warmup_steps))
        rewind = copy.deepcopy({k: d.detach() for k, d in self.deltas.items()})
        heads = copy.deepcopy(model.heads.state_dict())
        pretrained = {name: p.detach() for name, p in model.pretrained().items()}
        summary = {}
        for task, spec in enumerate(specs):
            masks = {name: torch.ones(shape, dtype=torch.bool, device=self._device())
                     for name, shape in self.targets.items()}
            rounds: list[dict] = []
            kept: list[dict[str, torch.Tensor]] = []
            while True:
                self._rewound(rewind, heads, model)
                self.set_task_masks(task, masks)
                session.train(Phase(f"prune {spec.name} r{len(rounds) + 1}", [task], options.round_steps,
                                    early_stopping=False))
                _, dev = session.evaluate(task, "dev")
                rounds.append({"round": len(rounds) + 1, "density": density(masks), "dev": dev, "step": session.step})
                kept.append(masks)
                session.reporter.log([round_record(spec, spec.name, rounds[-1])])
                if rounds[-1]["density"] <= options.min_density:
                    break
                with torch.no_grad():
                    trained = {name: pretrained[name] + self.deltas[self.key(name)] for name in self.targets}
                masks = prune_by_magnitude(trained, masks, options.prune_rate)
            best = max(range(len(rounds)), key=lambda i: (score(spec, rounds[i]["dev"]), -rounds[i]["density"]))
            self.set_task_masks(task, kept[best])
            summary[spec.name] = {"rounds": rounds, "chosen": rounds[best]["round"]}
        self._rewound(rewind, heads, model)
        return SearchReport({"pruning": summary})

    def _rewound(self, rewind: dict[str, torch.Tensor], heads: dict, model: PretrainedNet) -> None:
        """The shared delta and every head back to the rewind point."""
        with torch.no_grad():
            for key, delta in self.deltas.items():
                delta.copy_(rewind[key])
        model.heads.load_state_dict(heads)
