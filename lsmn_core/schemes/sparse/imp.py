"""IMP with rewinding, Algorithm 1 of the slides "Learning Sparse Sharing Architectures for
Multiple Tasks":

  optional multi-task warm-up (MTW):  theta_0 -> theta_w
  for each task t:
      M = 1
      repeat: rewind to theta_w; train k steps on t through theta * M; record dev metric of M;
              stop once density(M) <= S; else drop alpha of M's surviving weights with the lowest
              magnitude, globally over the body's weight matrices (biases and norms are never pruned),
              and alpha of each pruned encoder's by its own threshold
      choose the round with the best dev metric (ties: the sparser)
  rewind to theta_w and install the chosen masks; multi-task training follows in the trainer.

The tasks' searches are independent (each rewinds to theta_w and trains alone), so `tasks_at_once`
of them run side by side: each gets a private copy of the body and of its encoder (TaskReplicas),
and one batched step trains them all. Each task draws its batches from its own generator, so the
masks are the same whether the tasks run together or one after another. Under torchrun the tasks
are shared out between the processes (task t to rank t mod world, in groups of `tasks_at_once`),
each trains its groups alone, and every group's rounds and masks are then sent from its owner to
all, so every process installs the masks one process would have found.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from lsmn_core.store import routing
from lsmn_core.schemes.magnitude import density, prune_by_magnitude
from lsmn_core.network.model import MultitaskModel
from lsmn_core.schemes.base import IsometricScheme
from lsmn_core.schemes.masked import MaskedScheme
from lsmn_core.training.distributed import DataParallel
from lsmn_core.training.session import Phase, SearchReport, Session
from lsmn_core.data.tasks import score


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
        self.row_of = {t: row for row, t in enumerate(tasks)}  # on the host
        self.prunes_encoders = body.prunes_encoders
        self.row_encoders: list[tuple[str, nn.Module]] = []  # (shared key, the row's private copy); see _replica_model
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
        """The prunable weights of one row's copy (its encoder's too, where encoders are pruned), by the
        shared scheme's names."""
        weights = {name: self.get_parameter(name)[row] for name in self.row_masks if not name.startswith("encoders.")}
        if self.row_encoders:
            key, encoder = self.row_encoders[row]
            weights.update({f"encoders.{key}.{n}": p for n, p in encoder.named_parameters()
                            if f"encoders.{key}.{n}" in self.row_masks})
        return weights

    def encoder_params(self, key, encoder, task):
        """A row's private encoder copy seen through the row's masks."""
        if not self.prunes_encoders:
            return None
        row = self.row_of[task]
        return {n: p * self.row_masks[f"encoders.{key}.{n}"][row] if f"encoders.{key}.{n}" in self.row_masks else p
                for n, p in encoder.named_parameters()}


def _replica_model(model, tasks: list[int]):
    """`model` with its body, encoders and heads replaced by private copies for `tasks`; the shared
    body and the other tasks' encoders and heads are not copied at all (with 1,000 tasks, copying and
    rewinding every head cost more than the rounds' training)."""
    replacements = {id(model.body): TaskReplicas(model.body, tasks), id(model.encoders): nn.ModuleDict(),
                    id(model.heads): nn.ModuleDict()}
    replica = copy.deepcopy(model, replacements)  # deepcopy's memo: these objects stand for the originals
    for t in tasks:
        spec = model.specs[t]
        replica.encoders[replica.encoder_key(spec)] = copy.deepcopy(model.encoders[model.encoder_key(spec)])
        replica.heads[spec.name] = copy.deepcopy(model.heads[spec.name])
        replica.body.row_encoders.append((spec.encoder_key, replica.encoders[replica.encoder_key(spec)]))
    return replica


def find_subnetworks(session: Session, body: MaskedScheme) -> SearchReport:
    """Run Algorithm 1 on session.model, whose body (a sparse scheme) is `body`; returns the search
    report for the run.

    The report's summary lists every round per task (density, dev metric, chosen round); its arrays
    hold every round's masks, bit-packed, for routing.safetensors.
    """
    specs, options = session.tasks.specs, body.options
    all_tasks = list(range(len(specs)))
    if options.warmup_steps:
        session.train(Phase("warm-up", all_tasks, options.warmup_steps))
    parallel = session.parallel
    plan = _search_plan(len(all_tasks), options.tasks_at_once, parallel.world if parallel else 1)
    rank = parallel.rank if parallel else 0
    searched = {index: _prune_side_by_side(session, options, group, alone=parallel is not None)
                for index, (owner, group) in enumerate(plan) if owner == rank}
    if parallel is not None:
        searched = _gathered(session, parallel, plan, searched)
    summary, round_masks = {}, {}
    for index, (_, group) in enumerate(plan):
        for t, (rounds, kept) in zip(group, searched[index]):
            spec = specs[t]
            best = max(range(len(rounds)), key=lambda i: (score(spec, rounds[i]["dev"]), -rounds[i]["density"]))
            summary[spec.name] = {"rounds": rounds, "chosen": rounds[best]["round"]}
            round_masks[spec.name] = kept
            body.set_task_masks(t, kept[best])
    return SearchReport({"pruning": summary}, _pack_rounds(round_masks, specs))


def _prune_side_by_side(session: Session, options, group: list[int],
                        alone: bool = False) -> list[tuple[list[dict], list[dict]]]:
    """Algorithm 1's inner loop for every task of `group` at once, from the current weights
    (theta_w), in this process alone if `alone`. Returns, per task, its rounds (density, dev, the
    step it ended at) and every round's masks."""
    specs = session.tasks.specs
    replica = _replica_model(session.model, group)
    theta_w = copy.deepcopy(replica.state_dict())
    side = session.fork(replica, alone=alone)
    side.task_generators = {t: torch.Generator().manual_seed(session.config.seed * 100_003 + t) for t in group}
    # every weight the task can use: all of the body, and of the encoders only the one it reads
    masks = [{name: m[row] > 0 for name, m in replica.body.row_masks.items()} for row in range(len(group))]
    rounds: list[list[dict]] = [[] for _ in group]
    kept: list[list[dict[str, torch.Tensor]]] = [[] for _ in group]
    names = _group_name(specs, group)
    while True:
        replica.load_state_dict(theta_w)
        replica.body.set_masks(masks)
        phase = f"prune {names} r{len(rounds[0]) + 1}"
        side.train(Phase(phase, group, options.round_steps, sampling="all", early_stopping=False))
        records = []
        for row, (t, (_, dev)) in enumerate(zip(group, side.evaluate_each(group, "dev"))):
            rounds[row].append({"round": len(rounds[row]) + 1, "density": density(masks[row]), "dev": dev,
                                "step": side.step})
            records.append(round_record(specs[t], names, rounds[row][-1]))
            kept[row].append({n: m.clone() for n, m in masks[row].items()})
        session.reporter.log(records)
        if max(r[-1]["density"] for r in rounds) <= options.min_density:
            break
        masks = [_pruned(replica.body.row_weights(row), masks[row], options.prune_rate) for row in range(len(group))]
    session.step = side.step
    return list(zip(rounds, kept))


def _pruned(weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], rate: float) -> dict[str, torch.Tensor]:
    """Magnitude pruning of the weights a row holds, global within the body and within each encoder it
    reads, each part losing `rate` of its survivors; masks of encoders it does not read stay as they are.

    One threshold over all parts would empty the body first wherever an encoder's weights start at
    another scale: a token embedding starts at 1, a block's matrices near 1/sqrt(width), and the
    code_tokens tasks ended with 0 to 2% of the body and the embedding nearly whole."""
    pruned = dict(masks)
    for part in _parts(weights):
        pruned.update(prune_by_magnitude({n: weights[n] for n in part}, {n: masks[n] for n in part}, rate))
    return pruned


def _parts(weights: dict[str, torch.Tensor]) -> list[list[str]]:
    """The names of `weights` grouped into the body's and each encoder's (`encoders.<key>.…`)."""
    parts: dict[str, list[str]] = {}
    for name in weights:
        parts.setdefault(".".join(name.split(".")[:2]) if name.startswith("encoders.") else "body", []).append(name)
    return list(parts.values())


def _search_plan(n_tasks: int, at_once: int, world: int) -> list[tuple[int, list[int]]]:
    """(owner rank, group of tasks) for every group: each process's tasks (t mod world) in groups of
    `at_once`; one process: tasks in order."""
    plan = []
    for rank in range(world):
        tasks = list(range(rank, n_tasks, world))
        plan += [(rank, tasks[first : first + at_once]) for first in range(0, len(tasks), at_once)]
    return plan


def _group_name(specs, group: list[int]) -> str:
    return specs[group[0]].name if len(group) == 1 else f"{specs[group[0]].name}..{specs[group[-1]].name}"


def round_record(spec, group_name: str, round_: dict) -> dict:
    """A pruning round of one task as metrics.jsonl logs it."""
    return {"step": round_["step"], "phase": f"prune {group_name} r{round_['round']}", "task": spec.name,
            "split": "dev", "metric": spec.metric, "value": round_["dev"], "density": round_["density"]}


def _gathered(session: Session, parallel: DataParallel, plan: list[tuple[int, list[int]]], searched: dict) -> dict:
    """Every group's search results in every process, each sent by the process that ran it (the
    rounds' density, dev metric and step as numbers, their masks as tensors); rank 0 logs the rounds
    it did not run itself. The global step and the streamed tasks' positions continue from the
    furthest process."""
    specs = session.tasks.specs
    shapes = {name: m.shape[1:] for name, m in session.model.body.masks().items()}
    gathered = {}
    for index, (owner, group) in enumerate(plan):
        mine = index in searched
        results = []
        for row, t in enumerate(group):
            rounds, kept = searched[index][row] if mine else ([], [])
            count = int(parallel.share(torch.tensor([len(rounds)]), owner))
            numbers = torch.tensor([[r["density"], r["dev"], r["step"]] for r in rounds] if mine else
                                   torch.zeros(count, 3), dtype=torch.float64)
            numbers = parallel.share(numbers, owner)
            stacked = {name: parallel.share(torch.stack([k[name].cpu() for k in kept]) if mine else
                                            torch.zeros(count, *shape, dtype=torch.bool), owner)
                       for name, shape in shapes.items()}
            if not mine:
                rounds = [{"round": i + 1, "density": float(d), "dev": float(dev), "step": int(step)}
                          for i, (d, dev, step) in enumerate(numbers.tolist())]
                kept = [{name: m[i].to(session.tasks.device) for name, m in stacked.items()} for i in range(count)]
                session.reporter.log([round_record(specs[t], _group_name(specs, group), r) for r in rounds])
            results.append((rounds, kept))
        gathered[index] = results
    session.step = int(parallel.largest(torch.tensor([session.step])))
    positions = session.tasks.stream_positions()
    if positions:
        furthest = parallel.largest(torch.tensor(list(positions.values()), dtype=torch.long))
        session.tasks.seek(dict(zip(positions, map(int, furthest))))
    return gathered


def _pack_rounds(round_masks: dict, specs) -> dict[str, np.ndarray]:
    """Every round's masks as `rounds.<task>.<parameter>`: [rounds, *shape], bit-packed."""
    arrays = {}
    for spec in specs:
        for name in round_masks[spec.name][0]:
            stacked = torch.stack([r[name] for r in round_masks[spec.name]]).cpu().numpy()
            arrays[f"rounds.{spec.name}.{MultitaskModel.model_name(name)}"] = routing.pack(stacked)
    return arrays
