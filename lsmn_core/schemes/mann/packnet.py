"""PackNet ("PackNet: Adding Multiple Tasks to a Single Network by Iterative Pruning"): MANN on a
pretrained checkpoint. Tasks are packed into one copy of the target weights one after another, in
the config's order: a task trains every weight no earlier task owns, then keeps the `keep` share of
each target with the largest magnitude among them (it owns those from then on, and no later task
changes them), the weights it did not keep go back to their pretrained values for the next task,
and the task retrains on what it kept. Task t's network is the weights owned by tasks 1..t, the
others masked out (the paper's inference), so a task added later never changes an earlier one's
outputs.

Masks are nested: task t's mask is every weight owned by tasks 1..t, and the weights a task may
change are its mask less the earlier tasks' masks (`owned`).
"""

from __future__ import annotations

import torch

from lsmn_core.pretrained.masked_deltas import MaskedDeltas
from lsmn_core.pretrained.network import PretrainedNet, Source
from lsmn_core.schemes.magnitude import density
from lsmn_core.training.session import Phase, SearchReport, Session


class PackNetTargets(MaskedDeltas):
    kind = "mann"

    def __init__(self, options, n_tasks: int, source: Source, config):
        super().__init__(options, n_tasks, source, config)
        self.packing: tuple[int, dict[str, torch.Tensor]] | None = None  # a task being packed, what it may change

    def owned(self, task: int) -> dict[str, torch.Tensor]:
        """The weights `task` owns: its mask less every earlier task's."""
        masks = self.task_masks(task)
        if task == 0:
            return masks
        earlier = {name: self.mask_of(name, torch.arange(task, device=self._device())).any(0) for name in masks}
        return {name: mask & ~earlier[name] for name, mask in masks.items()}

    def update_masks(self, task):
        if self.packing is not None and self.packing[0] == task:
            changeable = self.packing[1]
        else:
            changeable = self.owned(task)
        return {f"deltas.{self.key(name)}": changeable[name] for name in self.targets}

    def search_routing(self, session: Session) -> SearchReport:
        return self.pack(session, list(range(self.n_tasks)))

    def admit_tasks(self, session: Session, tasks: list[int]) -> SearchReport:
        """New tasks packed into the weights no old task owns, as the first ones were."""
        return self.pack(session, tasks)

    def pack(self, session: Session, tasks: list[int]) -> SearchReport:
        """Pack `tasks` one after another into the weights the other tasks leave free (see the module's
        docstring); each trains round_steps on the free weights, then round_steps on those it keeps."""
        model, specs, keep, steps = session.model, session.tasks.specs, self.options.keep, self.options.round_steps
        if not isinstance(model, PretrainedNet):
            raise TypeError(f"PackNet's targets are a checkpoint's, not a {type(model).__name__}'s")
        others = torch.tensor([t for t in range(self.n_tasks) if t not in tasks], dtype=torch.long,
                              device=self._device())
        taken = {name: self.mask_of(name, others).any(0) if len(others) else
                 torch.zeros(shape, dtype=torch.bool, device=self._device()) for name, shape in self.targets.items()}
        summary = {}
        for task in tasks:
            name = specs[task].name
            free = {n: ~t for n, t in taken.items()}
            self.set_task_masks(task, {n: torch.ones_like(t) for n, t in taken.items()})
            self.packing = (task, free)
            session.train(Phase(f"packnet {name} free", [task], steps, early_stopping=False))
            _, before = session.evaluate(task, "dev")
            own = self._largest(free, keep, model.pretrained())
            with torch.no_grad():
                for n in self.targets:  # what the task did not keep: the pretrained values again
                    self.deltas[self.key(n)].masked_fill_(free[n] & ~own[n], 0.0)
            taken = {n: taken[n] | own[n] for n in taken}
            self.set_task_masks(task, taken)
            self.packing = (task, own)
            session.train(Phase(f"packnet {name} kept", [task], steps, early_stopping=False))
            self.packing = None
            _, dev = session.evaluate(task, "dev")
            summary[name] = {"free_before": density(free), "owned": density(own), "density": density(taken),
                             "dev_before_pruning": before, "dev": dev}
        return SearchReport({"packnet": summary})

    def _largest(self, free: dict[str, torch.Tensor], keep: float,
                 pretrained: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Of each target, the round(keep x its size) free weights of largest magnitude (pretrained
        value plus delta), ranked within the target, as PackNet prunes layer by layer."""
        own = {}
        for name, mask in free.items():
            weight = pretrained[name].detach() + self.deltas[self.key(name)].detach()
            magnitude = weight.abs().masked_fill(~mask, -1.0).flatten()
            count = min(round(keep * mask.numel()), int(mask.sum()))
            chosen = torch.zeros_like(mask.flatten())
            chosen[torch.topk(magnitude, count).indices] = True
            own[name] = chosen.view_as(mask)
        return own
