"""How task vectors interfere, measured tensor by tensor as they are read: each task's mask of its
largest deltas, the sign-conflict rate (of the weights two or more tasks' masks keep, the share
whose kept deltas disagree in sign: the interference TIES resolves), the cosine similarity of the
task vectors (over the whole network and per layer) and each task's delta magnitude per layer; and,
for each weight matrix, the singular task interference of "Task Singular Vectors: Reducing Task
Interference in Model Merging" (of all tasks, and of each pair) and the share of each task's delta
energy its top floor(r / T) singular values hold (how low-rank each task's change is)."""

from __future__ import annotations

import itertools

import torch

from lsmn_core.merges.matrix import top_triplets
from lsmn_core.pretrained.changes import change_report


def singular_interference(deltas: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Of one weight's task vectors [T, m, n], with k = floor(r / T) and U, V each task's top k singular
    vectors side by side and S their singular values: ||(U^T U - I) S (V^T V - I)||_1 (0 when every two
    tasks' singular vectors are orthogonal), the same of each pair of tasks [T, T], and each task's
    share of its squared Frobenius norm in its top k singular values [T]."""
    tasks, m, n = deltas.shape
    k = min(m, n) // tasks
    deltas = deltas.double()
    u, s, vt = top_triplets(deltas, k)  # every task's in one batched call
    totals = deltas.flatten(1).pow(2).sum(1)  # the sum of all of each one's squared singular values
    energy = torch.where(totals > 0, s.pow(2).sum(1) / totals.clamp_min(1e-300), 0.0)
    u, s, vt = u.permute(1, 0, 2).reshape(m, tasks * k), s.reshape(-1), vt.reshape(tasks * k, n)
    eye = torch.eye(tasks * k, dtype=u.dtype)
    left, right = u.T @ u - eye, vt @ vt.T - eye  # any set of tasks' U^T U - I is a block of these

    def measure(chosen: list[int]) -> float:
        slots = torch.cat([torch.arange(t * k, (t + 1) * k) for t in chosen])
        block = left[slots][:, slots] * s[slots]
        return float((block @ right[slots][:, slots]).abs().sum())

    pairwise = torch.zeros(tasks, tasks, dtype=torch.float64)
    for a, b in itertools.combinations(range(tasks), 2):
        pairwise[a, b] = pairwise[b, a] = measure([a, b])
    return measure(list(range(tasks))), pairwise, energy


class Interference:
    """Sums over the tensors of a run's task vectors, by column (before the layers, each layer,
    after them)."""

    def __init__(self, tasks: int, columns: list[str]):
        self.columns = columns
        self.gram = torch.zeros(len(columns), tasks, tasks, dtype=torch.float64)
        self.shared = torch.zeros(len(columns), dtype=torch.float64)  # weights kept by two or more tasks
        self.conflicts = torch.zeros(len(columns), dtype=torch.float64)
        self.per_tensor: dict[str, dict[str, float]] = {}
        self.singular: dict[str, float] = {}  # of each weight matrix
        self.singular_pairs = torch.zeros(len(columns), tasks, tasks, dtype=torch.float64)
        self.top_energy = torch.zeros(len(columns), tasks, dtype=torch.float64)  # in the top k, weighted by norm
        self.matrix_energy = torch.zeros(len(columns), tasks, dtype=torch.float64)

    def add(self, name: str, column: int, deltas: torch.Tensor, kept: torch.Tensor) -> None:
        """A chunk of one tensor: its task vectors [T, ...] and each task's kept deltas (zero where its
        mask leaves the weight out). Counted in float arithmetic: on a CPU bool masks are slow."""
        wide, kept = deltas.flatten(1).double(), kept.flatten(1)
        self.gram[column] += wide @ wide.T
        shared = kept.sign().abs_().sum(0) >= 2
        conflict = shared & (kept.amax(0) > 0) & (kept.amin(0) < 0)  # a positive kept delta and a negative one
        shared_count, conflict_count = float(torch.count_nonzero(shared)), float(torch.count_nonzero(conflict))
        counts = self.per_tensor.setdefault(name, {"shared": 0.0, "conflicts": 0.0})
        counts["shared"] += shared_count
        counts["conflicts"] += conflict_count
        self.shared[column] += shared_count
        self.conflicts[column] += conflict_count

    def add_matrix(self, name: str, column: int, deltas: torch.Tensor) -> None:
        """One weight matrix's task vectors [T, m, n], whole."""
        total, pairwise, energy = singular_interference(deltas)
        norms = deltas.flatten(1).double().pow(2).sum(1)
        self.singular[name] = total
        self.singular_pairs[column] += pairwise
        self.top_energy[column] += energy * norms
        self.matrix_energy[column] += norms

    def report(self) -> dict:
        """JSON for summary.json's "vectors"."""
        used = [i for i in range(len(self.columns)) if self.gram[i].diagonal().sum() > 0 or self.shared[i] > 0]
        return {
            **change_report(self.gram, self.columns, used),
            "sign_conflicts": [float(self.conflicts[i] / self.shared[i]) if self.shared[i] else 0.0 for i in used],
            "shared_weights": [int(self.shared[i]) for i in used],
            "sign_conflicts_per_tensor": {name: c["conflicts"] / c["shared"] if c["shared"] else 0.0
                                          for name, c in self.per_tensor.items()},
            **({"singular_per_tensor": self.singular,
                "singular_pairwise": self.singular_pairs.sum(0).tolist(),
                "singular_pairwise_per_layer": [self.singular_pairs[i].tolist() for i in used],
                "low_rank_energy": (self.top_energy[used] / self.matrix_energy[used].clamp_min(1e-30)).T.tolist()}
               if self.singular else {}),
        }

