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
    u, s, v, energy = [], [], [], torch.zeros(tasks, dtype=torch.float64)
    for t, delta in enumerate(deltas.double()):
        left, values, right = top_triplets(delta, k)
        u.append(left)
        s.append(values)
        v.append(right.T)
        total = float(delta.pow(2).sum())  # the sum of all its squared singular values
        energy[t] = float(values.pow(2).sum()) / total if total else 0.0

    def measure(chosen: list[int]) -> float:
        us, vs = torch.cat([u[t] for t in chosen], 1), torch.cat([v[t] for t in chosen], 1)
        eye = torch.eye(us.shape[1], dtype=us.dtype)
        values = torch.diag(torch.cat([s[t] for t in chosen]))
        return float(((us.T @ us - eye) @ values @ (vs.T @ vs - eye)).abs().sum())

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

    def add(self, name: str, column: int, deltas: torch.Tensor, masks: torch.Tensor) -> None:
        """A chunk of one tensor: its task vectors [T, ...] and the tasks' masks of it."""
        flat, kept = deltas.flatten(1).double(), masks.flatten(1)
        self.gram[column] += flat @ flat.T
        shared = kept.sum(0) >= 2
        signs = torch.sign(flat) * kept
        conflict = shared & (signs > 0).any(0) & (signs < 0).any(0)
        counts = self.per_tensor.setdefault(name, {"shared": 0.0, "conflicts": 0.0})
        counts["shared"] += float(shared.sum())
        counts["conflicts"] += float(conflict.sum())
        self.shared[column] += float(shared.sum())
        self.conflicts[column] += float(conflict.sum())

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

