"""IMP with rewinding, Algorithm 1 of the slides "Learning Sparse Sharing Architectures for
Multiple Tasks":

  optional multi-task warm-up (MTW):  theta_0 -> theta_w
  for each task t:
      M = 1
      repeat: rewind to theta_w; train k steps on t through theta * M; record dev metric of M;
              stop once density(M) <= S; else drop alpha of M's surviving weights with the lowest
              magnitude, globally over the body's weight matrices (biases and norms are never pruned)
      choose the round with the best dev metric (ties: the sparser)
  rewind to theta_w and install the chosen masks; multi-task training follows in the trainer.

The tasks' searches are independent (each rewinds to theta_w and trains alone), so `tasks_at_once`
of them run side by side: each gets a private copy of the body and of its encoder (TaskReplicas),
and one batched step trains them all. Each task draws its batches from its own generator, so the
masks are the same whether the tasks run together or one after another.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from lsmn_core import routing
from lsmn_core.magnitude import density, prune_by_magnitude
from lsmn_core.schemes.base import IsometricScheme
from lsmn_core.session import Phase, SearchReport, Session
from lsmn_core.tasks import score


class TaskReplicas(IsometricScheme):
    """Private copies of a sparse body for a group of tasks, each seen through its task's mask, so
    that the group's pruning rounds train in one batched model. Rows follow `tasks`.

    Updates need no restriction to the masks (the sparse body's update_masks): a copy's weights
    outside its mask are never read (masked in the forward, ignored by the pruning) and the next
    round rewinds them."""

    kind = "replicas"
    per_task_encoders = True

    def __init__(self, body, tasks: list[int]):
        super().__init__(body.options, len(tasks), body.depth, body.block)
        weight = next(body.parameters())
        rows = torch.full((body.n_tasks,), -1, dtype=torch.long)
        rows[tasks] = torch.arange(len(tasks))
        self.register_buffer("rows", rows.to(weight.device), persistent=False)
        self.blocks = nn.ModuleList(
            nn.ParameterDict({n: nn.Parameter(p.detach().unsqueeze(0).repeat(len(tasks), *[1] * p.dim()))
                              for n, p in block.items()}) for block in body.blocks)
        # in the weights' dtype, not bool: on a CPU a multiply by a bool mask costs 4x one by a float mask
        self.row_masks = {n: m[tasks].to(weight.dtype) for n, m in body.masks().items()}

    def block_params(self, layer, tasks):
        rows = self.rows[tasks]
        # the usual step trains the whole group in order; on the host that is seen without a sync,
        # and then the copies need no gather (whose backward, a scatter, costs more than the gather)
        in_order = not rows.is_cuda and rows.tolist() == list(range(self.n_tasks))
        params = {}
        for name, p in self.blocks[layer].items():
            full = f"blocks.{layer}.{name}"
            own = p if in_order else p.index_select(0, rows)
            if full in self.row_masks:
                own = own * (self.row_masks[full] if in_order else self.row_masks[full].index_select(0, rows))
            params[name] = own
        return params

    def set_masks(self, masks: list[dict[str, torch.Tensor]]) -> None:
        """One mask dict per row."""
        for name, stacked in self.row_masks.items():
            stacked.copy_(torch.stack([m[name] for m in masks]))

    def row_weights(self, row: int) -> dict[str, torch.Tensor]:
        """The prunable weights of one row's copy, by the shared body's parameter names."""
        return {name: self.get_parameter(name)[row] for name in self.row_masks}


def _replica_model(model, tasks: list[int]):
    """`model` with its body and encoders replaced by private copies for `tasks`; the rest (heads)
    is deep-copied, the shared body and the other tasks' encoders are not copied at all."""
    replacements = {id(model.body): TaskReplicas(model.body, tasks), id(model.encoders): nn.ModuleDict()}
    replica = copy.deepcopy(model, replacements)  # deepcopy's memo: these objects stand for the originals
    for t in tasks:
        spec = model.specs[t]
        replica.encoders[replica.encoder_key(spec)] = copy.deepcopy(model.encoders[model.encoder_key(spec)])
    return replica


def find_subnetworks(session: Session, options) -> SearchReport:
    """Run Algorithm 1 on session.model (a sparse scheme); returns the search report for the run.

    The report's summary lists every round per task (density, dev metric, chosen round); its arrays
    hold every round's masks, bit-packed, for routing.safetensors.
    """
    model, specs = session.model, session.tasks.specs
    all_tasks = list(range(len(specs)))
    if options.warmup_steps:
        session.train(Phase("warm-up", all_tasks, options.warmup_steps))
    summary, round_masks = {}, {}
    for first in range(0, len(all_tasks), options.tasks_at_once):
        group = all_tasks[first : first + options.tasks_at_once]
        for t, (rounds, kept) in zip(group, _prune_side_by_side(session, options, group)):
            spec = specs[t]
            best = max(range(len(rounds)), key=lambda i: (score(spec, rounds[i]["dev"]), -rounds[i]["density"]))
            summary[spec.name] = {"rounds": rounds, "chosen": rounds[best]["round"]}
            round_masks[spec.name] = kept
            model.body.set_task_masks(t, kept[best])
    return SearchReport({"pruning": summary}, _pack_rounds(round_masks, specs))


def _prune_side_by_side(session: Session, options, group: list[int]) -> list[tuple[list[dict], list[dict]]]:
    """Algorithm 1's inner loop for every task of `group` at once, from the current weights
    (theta_w). Returns, per task, its rounds (density, dev) and every round's masks."""
    specs = session.tasks.specs
    replica = _replica_model(session.model, group)
    theta_w = copy.deepcopy(replica.state_dict())
    side = session.fork(replica)
    side.task_generators = {t: torch.Generator().manual_seed(session.config.seed * 100_003 + t) for t in group}
    masks = [{name: torch.ones_like(m[0], dtype=torch.bool) for name, m in replica.body.row_masks.items()}
             for _ in group]
    rounds, kept = [[] for _ in group], [[] for _ in group]
    names = specs[group[0]].name if len(group) == 1 else f"{specs[group[0]].name}..{specs[group[-1]].name}"
    while True:
        replica.load_state_dict(theta_w)
        replica.body.set_masks(masks)
        phase = f"prune {names} r{len(rounds[0]) + 1}"
        side.train(Phase(phase, group, options.round_steps, sampling="all", early_stopping=False))
        records = []
        for row, t in enumerate(group):
            _, dev = side.evaluate(t, "dev")
            rounds[row].append({"round": len(rounds[row]) + 1, "density": density(masks[row]), "dev": dev})
            records.append({"step": side.step, "phase": phase, "task": specs[t].name, "split": "dev",
                            "metric": specs[t].metric, "value": dev, "density": rounds[row][-1]["density"]})
            kept[row].append({n: m.clone() for n, m in masks[row].items()})
        session.reporter.log(records)
        if max(r[-1]["density"] for r in rounds) <= options.min_density:
            break
        masks = [prune_by_magnitude(replica.body.row_weights(row), masks[row], options.prune_rate)
                 for row in range(len(group))]
    session.step = side.step
    return list(zip(rounds, kept))


def _pack_rounds(round_masks: dict, specs) -> dict[str, np.ndarray]:
    """Every round's masks as `rounds.<task>.<parameter>`: [rounds, *shape], bit-packed."""
    arrays = {}
    for spec in specs:
        for name in round_masks[spec.name][0]:
            stacked = torch.stack([r[name] for r in round_masks[spec.name]]).cpu().numpy()
            arrays[f"rounds.{spec.name}.body.{name}"] = routing.pack(stacked)
    return arrays
