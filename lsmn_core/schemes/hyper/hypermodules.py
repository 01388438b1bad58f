"""The hypermodules of MUiR ("Modular Universal Reparameterization: Deep Multi-Task Learning Across
Diverse Domains") and the alignment that routes block locations to them, whatever network the
weights go into: each task's own architecture (architectures.py) or a body of blocks (body.py).

Every task weight tensor whose sizes divide into m x n blocks is cut into such blocks (per kernel
position for convolutions). Block location l gets its weights from a hypermodule H_k [m, n, c] and a
context z_l [c] of its own:  B_l = H[psi(l)] z_l,  with K hypermodules shared by all tasks and the
alignment psi (location -> hypermodule) as the editable routing. Tensors that do not divide into
blocks stay with their task.

While the alignment search (search.py beside this file) runs a generation, location l holds candidates
psi^0(l) (the incumbent) .. psi^lambda(l) and uses the softmax(s_l)-weighted sum of their blocks
(the poster's equation 4); each candidate column is one batched contraction over all locations.

A hypermodule and its negation are the same module (B = H z = (-H)(-z)), but a location's candidates
share its context, so a challenger pointing the other way from the incumbent could never show its
worth: a task whose weights have the opposite sign to its group-mates' stayed off their hypermodule
and the group split in two by sign. So each challenger enters in the orientation (+1 or -1) in which
its block agrees with the location's current block, and one that wins in orientation -1 negates the
location's context: the location's function is the same either way.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lsmn_core.errors import ConfigError, RoutingError
from lsmn_core.store.files import json_integer
from lsmn_core.schemes.base import SharingScheme
from lsmn_core.schemes.hyper.search import evolve_alignment
from lsmn_core.training.session import SearchReport

Slot = tuple[int, int]  # a weight's (offset among its task's block locations, number of locations)


def assemble(blocks: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Blocks [G, count, m, n] in location order (kernel position, row block, column block) as G weight
    tensors of `shape` [out, in, *kernel]."""
    groups, _, m, n = blocks.shape
    out, inp, *spatial = shape
    part = blocks.reshape(groups, math.prod(spatial), out // m, inp // n, m, n)
    return part.permute(0, 2, 4, 3, 5, 1).reshape(groups, out, inp, *spatial)


class Hypermodules(SharingScheme):
    """K hypermodules, a context per block location and the alignment between them; a subclass
    creates its tasks' own parameters first, then calls `share` with its tasks' weight shapes."""

    kind = "hyper"
    own_architectures = True
    # buffers, registered in share(): the location gains, the alignment psi, and a generation's candidates
    gain: torch.Tensor
    alignment: torch.Tensor
    candidates: torch.Tensor | None
    candidate_active: torch.Tensor | None
    orientation: torch.Tensor | None

    def share(self, weights: list[list[tuple[int, ...]]]) -> list[list[Slot | None]]:
        """Cut every task's weights (shapes per task, in order) into block locations and create the
        hypermodules, contexts and alignment; returns each weight's slot (None: it does not divide)."""
        options = self.options
        m, n = options.block
        slots: list[list[Slot | None]] = []
        self.task_start: list[int] = []  # a task's block locations are contiguous: task_start[t] ...
        gains: list[float] = []
        for shapes in weights:
            self.task_start.append(len(gains))
            task_slots: list[Slot | None] = []
            for shape in shapes:
                if shape[0] % m or shape[1] % n:
                    task_slots.append(None)
                    continue
                count = math.prod(shape[2:]) * (shape[0] // m) * (shape[1] // n)
                task_slots.append((len(gains) - self.task_start[-1], count))
                gains += [math.sqrt(n / math.prod(shape[1:]))] * count  # blocks of a wide fan-in are scaled down
            slots.append(task_slots)
        self.task_start.append(len(gains))
        L = len(gains)
        if L == 0:
            raise ConfigError(f"scheme.block {options.block}: no task has a weight tensor that divides into "
                              f"{m} x {n} blocks, so nothing can be shared")
        K = options.hypermodules or max(1, L // 2)
        if options.alignment == "distinct" and K < L:
            if options.hypermodules:
                raise ConfigError(f"scheme.hypermodules: alignment 'distinct' needs one per block location ({L}), "
                                  f"got {K}")
            K = L
        self.n_hypermodules = K
        c = options.context
        self.hypermodules = nn.Parameter(torch.empty(K, m, n, c))
        self.reset_hypermodules(range(K))
        self.contexts = nn.Parameter(torch.full((L, c), 1 / math.sqrt(c)))
        self.register_buffer("gain", torch.tensor(gains), persistent=False)
        self.register_buffer("alignment", self.initial_alignment(L, K), persistent=False)
        self.register_buffer("candidates", None, persistent=False)  # [L, 1 + lambda] during a generation
        self.register_buffer("candidate_active", None, persistent=False)
        self.register_buffer("orientation", None, persistent=False)  # [L, 1 + lambda], +1 or -1
        self.scores: torch.Tensor | None = None  # s [L, 1 + lambda] during a generation; the search trains it
        self.history: list[dict] = []
        return slots

    # ---- the alignment ---------------------------------------------------------------------------

    def initial_alignment(self, L: int, K: int) -> torch.Tensor:
        options = self.options
        if options.alignment == "distinct":  # the poster's pessimistic initialisation
            return torch.arange(L)
        if options.alignment == "random":
            return torch.randint(K, (L,))
        groups = options.groups
        if groups is None or len(groups) != self.n_tasks:
            raise ConfigError(f"scheme.groups: alignment 'groups' needs one group number per task ({self.n_tasks})")
        ids: dict[tuple[int, int], int] = {}
        alignment = []
        for t in range(self.n_tasks):  # location j of every task in a group gets the same hypermodule
            for j in range(len(self.task_locations(t))):
                alignment.append(ids.setdefault((groups[t], j), len(ids)))
        if len(ids) > K:
            raise ConfigError(f"scheme.hypermodules: the groups need {len(ids)} hypermodules, got {K}")
        return torch.tensor(alignment)

    def task_locations(self, task: int) -> list[int]:
        return list(range(self.task_start[task], self.task_start[task + 1]))

    def reset_hypermodules(self, indices) -> None:
        """Fresh hypermodules: entries N(0, 1/n), so a block has unit-scale rows before its gain."""
        n = self.options.block[1]
        with torch.no_grad():
            for k in indices:
                self.hypermodules[k].normal_(0, 1 / math.sqrt(n))

    def alignment_of(self, task_names: list[str]) -> dict[str, list[int]]:
        psi = self.alignment.tolist()
        return {name: [psi[i] for i in self.task_locations(t)] for t, name in enumerate(task_names)}

    # ---- soft-merged candidates (one generation of the search) ------------------------------------

    def begin_generation(self, candidates: torch.Tensor, active: torch.Tensor) -> None:
        """Locations get candidates [L, 1 + lambda] (column 0 the incumbent); inactive ones are ignored.
        The incumbent starts with `incumbent_share` of the weight (default: an equal part), its
        challengers with equal parts of the rest, each in the orientation that agrees with the
        location's current block."""
        device = self.alignment.device
        candidates, active = candidates.to(device), active.to(device)
        self.candidates, self.candidate_active = candidates, active
        with torch.no_grad():
            blocks = torch.einsum("lkmnc,lc->lkmn", self.hypermodules[candidates], self.contexts)
            agreement = (blocks * blocks[:, :1]).flatten(2).sum(-1)
            self.orientation = torch.where(agreement < 0, -1.0, 1.0)
            start = torch.zeros(candidates.shape, device=device)
            share = self.options.incumbent_share
            if share is not None:
                challengers = (active.sum(1) - 1).clamp_min(1).float()
                start[:, 0] = torch.log(challengers * share / (1 - share))
        self.scores = start.requires_grad_(True)

    def generation(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The running generation's candidates, which are active, their orientations and scores s."""
        candidates, active, orientation, scores = self.candidates, self.candidate_active, self.orientation, self.scores
        if candidates is None or active is None or orientation is None or scores is None:
            raise RuntimeError("no generation of the alignment search is running")
        return candidates, active, orientation, scores

    def candidate_weights(self) -> torch.Tensor:
        """softmax(s_l) over each location's active candidates, [L, 1 + lambda]."""
        _, active, _, scores = self.generation()
        return torch.softmax(scores.masked_fill(~active, -math.inf), dim=-1)

    def end_generation(self) -> int:
        """Each location keeps the candidate with the highest weight (a winner taken in orientation -1
        negates the location's context); returns how many changed."""
        candidates, _, orientation, _ = self.generation()
        with torch.no_grad():
            winner = self.candidate_weights().argmax(-1)[:, None]
            chosen = candidates.gather(1, winner)[:, 0]
            changed = int((chosen != self.alignment).sum())
            self.alignment.copy_(chosen)
            self.contexts.mul_(orientation.gather(1, winner))
        self.candidates = self.candidate_active = self.scores = self.orientation = None
        return changed

    # ---- weights -----------------------------------------------------------------------------------

    def blocks(self, locations: torch.Tensor) -> torch.Tensor:
        """The blocks [len(locations), m, n] at `locations`, each H[psi(l)] z_l (or its candidates' mix)."""
        z, gain = self.contexts[locations], self.gain[locations][:, None, None]
        if self.candidates is None:
            return torch.einsum("lmnc,lc->lmn", self.hypermodules[self.alignment[locations]], z) * gain
        # Candidate column by column, each one contraction over every location: on CPU this is twice
        # as fast as one einsum over all candidates, which gathers and scatters [l, 1 + lambda, m, n, c]
        # (lsmn bench, "MUiR generation").
        all_candidates, _, orientation, _ = self.generation()
        weights = self.candidate_weights()[locations] * orientation[locations]
        candidates = all_candidates[locations]
        return sum(torch.einsum("lmnc,lc->lmn", self.hypermodules[candidates[:, k]], z) * weights[:, k, None, None]
                   for k in range(candidates.shape[1])) * gain

    # ---- the scheme interface ----------------------------------------------------------------------

    def usage(self, task):
        """The hypermodules its locations use and its contexts; a subclass adds the task's own weights."""
        used = {name: torch.zeros_like(p, dtype=torch.bool) for name, p in self.named_parameters()}
        locations = self.task_locations(task)
        used["hypermodules"][self.alignment[locations].unique()] = True
        used["contexts"][locations] = True
        return used

    def search_routing(self, session):
        return evolve_alignment(session, self) if self.options.generations else SearchReport()

    def routing_parameters(self):
        return ["contexts"]  # with the alignment fixed, a task adapts through its contexts alone

    def routing_document(self, task_names):
        return {"hypermodules": self.n_hypermodules, "block": list(self.options.block),
                "context": self.options.context, "alignment": self.alignment_of(task_names),
                "history": self.history}

    def parse_routing_document(self, doc, task_names):
        """The alignment per task: one hypermodule index in 0..K-1 for each of the task's blocks."""
        alignment = doc.get("alignment")
        if not isinstance(alignment, dict) or set(alignment) != set(task_names):
            raise RoutingError(f"routing needs an 'alignment' for exactly the tasks {task_names}")
        psi = torch.empty(len(self.gain), dtype=torch.long)
        K = self.n_hypermodules
        for t, task in enumerate(task_names):
            entry, locations = alignment[task], self.task_locations(t)
            if not isinstance(entry, list) or len(entry) != len(locations):
                raise RoutingError(f"alignment of {task}: expected a list of {len(locations)} hypermodule indices")
            if not all(json_integer(k) and 0 <= k < K for k in entry):
                raise RoutingError(f"alignment of {task}: every entry must be a hypermodule index in 0..{K - 1}")
            psi[locations] = torch.tensor(entry, dtype=torch.long)
        history = doc.get("history", [])
        if not isinstance(history, list):
            raise RoutingError("routing 'history' must be a list of generations")
        return {"alignment": psi, "history": history}

    def load_routing(self, state):
        if "alignment" in state:
            self.alignment.copy_(state["alignment"])
        self.history = list(state.get("history", self.history))

    def routing_summary(self, task_names):
        owner = torch.repeat_interleave(torch.arange(self.n_tasks), torch.diff(torch.tensor(self.task_start)))
        users = torch.unique(torch.stack([self.alignment.cpu(), owner]), dim=1)[0]  # one entry per (module, task)
        used, count = torch.unique(users, return_counts=True)
        return {"locations": len(self.gain), "hypermodules": self.n_hypermodules,
                "hypermodules_used": len(used), "shared_hypermodules": int((count > 1).sum()),
                "generations": max(len(self.history) - 1, 0)}
