"""A retrained run against its parent: how each task's metrics moved, and which of the routing the
edit (and the retraining) changed, read from the routing states the schemes decode, so no scheme is
named here."""

from __future__ import annotations

import numpy as np


def metric_changes(parent_summary: dict, child_summary: dict) -> list[dict]:
    """Per task of the child: the parent's test metric (None for an added task), its own, the change."""
    rows = []
    for task, m in child_summary["metrics"].items():
        before = parent_summary["metrics"].get(task, {}).get("test")
        rows.append({"task": task, "metric": m["metric"], "parent test": before, "test": m["test"],
                     "change": None if before is None else m["test"] - before})
    return rows


def routing_changes(parent_state: dict, child_state: dict, parent_tasks: list[str]) -> list[dict]:
    """Per routing part and parent task, how many elements differ: masks summed over the prunable
    weights; a per-task part ([T, ...]) row by row; any other array as a whole ("all tasks")."""
    parts, before = _arrays(child_state), _arrays(parent_state)
    counts: dict[tuple[str, str], list[int]] = {}
    for name, value in parts.items():
        if name not in before:
            continue
        old, new = np.asarray(before[name]), np.asarray(value)
        per_task = old.ndim >= 2 and old.shape[0] == len(parent_tasks)
        if per_task:
            new = new[: len(parent_tasks)]  # a child may have added tasks after the parent's
        if new.shape != old.shape:
            continue
        part = "masks" if name.startswith("mask of ") else name
        rows = zip(parent_tasks, old, new) if per_task else [("all tasks", old, new)]
        for task, a, b in rows:
            changed = int((~np.isclose(a, b, equal_nan=True)).sum()) if a.dtype.kind == "f" else int((a != b).sum())
            entry = counts.setdefault((part, task), [0, 0])
            entry[0] += changed
            entry[1] += a.size
    return [{"routing": part, "task": task, "changed": n, "of": size}
            for (part, task), (n, size) in counts.items() if n]


def _arrays(state: dict) -> dict:
    """A routing state's arrays by part: each mask as "mask of <parameter>", the scheme's own by key."""
    arrays = {f"mask of {name}": mask for name, mask in state.get("masks", {}).items()}
    arrays.update({k: v for k, v in state.items() if k != "masks" and hasattr(v, "shape")})
    return arrays
