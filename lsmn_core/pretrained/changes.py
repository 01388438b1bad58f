"""How far each task moved a checkpoint, layer by layer, and how alike two tasks' moves are: from
the Gram matrices of their changes (each task's delta of every target, flattened), summed per
layer. A run with a change per task (a fine-tune or a LoRA adapter per task) reports them at the
end of training; task vectors report them at import, beside their interference."""

from __future__ import annotations

from collections.abc import Callable

import torch


def cosine(gram: torch.Tensor) -> list[list[float]]:
    """The cosine similarity of every pair of tasks' changes, from their Gram matrix [T, T]."""
    norms = gram.diagonal().clamp_min(1e-30).sqrt()
    return (gram / norms[:, None] / norms[None, :]).tolist()


def change_report(grams: torch.Tensor, columns: list[str], used: list[int]) -> dict:
    """JSON of the Gram matrices [columns, T, T] of the columns `used`: their labels, the cosine of
    each pair of tasks over all of them and per column, and each task's L2 norm per column."""
    return {"layers": [columns[i] for i in used], "cosine": cosine(grams.sum(0)),
            "cosine_per_layer": [cosine(grams[i]) for i in used],
            "norms": grams[used].diagonal(dim1=1, dim2=2).sqrt().T.tolist()}  # [tasks][columns]


class ReportsChanges:
    """A TargetScheme with a change of every target per task (`delta(task, name)`): its routing
    summary reports the tasks' changes per layer ("changes")."""

    n_tasks: int
    depth: int
    targets: dict[str, torch.Size]
    target_layers: dict[str, int]
    delta: Callable[[int, str], torch.Tensor]  # the scheme's own

    def routing_summary(self, task_names: list[str]) -> dict:
        grams = torch.zeros(self.depth, self.n_tasks, self.n_tasks, dtype=torch.float64)
        with torch.no_grad():
            for name in self.targets:
                flat = torch.stack([self.delta(t, name).flatten() for t in range(self.n_tasks)]).double()
                grams[self.target_layers[name]] += (flat @ flat.T).cpu()
        return {"changes": change_report(grams, [f"layer {i}" for i in range(self.depth)], list(range(self.depth)))}
