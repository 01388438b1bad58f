"""How task vectors interfere, measured tensor by tensor as they are read: each task's mask of its
largest deltas, the sign-conflict rate (of the weights two or more tasks' masks keep, the share
whose kept deltas disagree in sign: the interference TIES resolves), the cosine similarity of the
task vectors (over the whole network and per layer) and each task's delta magnitude per layer."""

from __future__ import annotations

import torch


class Interference:
    """Sums over the tensors of a run's task vectors, by column (before the layers, each layer,
    after them)."""

    def __init__(self, tasks: int, columns: list[str]):
        self.columns = columns
        self.gram = torch.zeros(len(columns), tasks, tasks, dtype=torch.float64)
        self.shared = torch.zeros(len(columns), dtype=torch.float64)  # weights kept by two or more tasks
        self.conflicts = torch.zeros(len(columns), dtype=torch.float64)
        self.per_tensor: dict[str, dict[str, float]] = {}

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

    def report(self) -> dict:
        """JSON for summary.json's "vectors"."""
        def cosine(gram: torch.Tensor) -> list[list[float]]:
            norms = gram.diagonal().clamp_min(1e-30).sqrt()
            return (gram / norms[:, None] / norms[None, :]).tolist()

        used = [i for i in range(len(self.columns)) if self.gram[i].diagonal().sum() > 0 or self.shared[i] > 0]
        return {
            "layers": [self.columns[i] for i in used],
            "cosine": cosine(self.gram.sum(0)),
            "cosine_per_layer": [cosine(self.gram[i]) for i in used],
            "norms": self.gram[used].diagonal(dim1=1, dim2=2).sqrt().T.tolist(),  # [tasks][layers]
            "sign_conflicts": [float(self.conflicts[i] / self.shared[i]) if self.shared[i] else 0.0 for i in used],
            "shared_weights": [int(self.shared[i]) for i in used],
            "sign_conflicts_per_tensor": {name: c["conflicts"] / c["shared"] if c["shared"] else 0.0
                                          for name, c in self.per_tensor.items()},
        }

