"""Mask overlap (sparse-sharing slides): OR(M_1..M_T) = |intersection| / |union|, and what each
subset of tasks uses. Pure functions of {parameter name: bool [T, *shape]} masks."""

from __future__ import annotations

import numpy as np

from analysis.bitcount import packed_intersections
from lsmn_core.blocks import block_index


def flatten(masks: dict[str, np.ndarray]) -> np.ndarray:
    """All parameters' masks side by side: bool [T, N]."""
    return np.concatenate([np.asarray(m, dtype=bool).reshape(m.shape[0], -1) for m in masks.values()], axis=1)


def by_layer(masks: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """Masks grouped per body block: {layer: bool [T, N_layer]}."""
    groups: dict[int, dict] = {}
    for name, m in masks.items():
        groups.setdefault(block_index(name), {})[name] = m
    return {layer: flatten(group) for layer, group in sorted(groups.items())}


def overlap_ratio(flat: np.ndarray) -> float:
    """|M_1 & ... & M_T| / |M_1 | ... | M_T| for flat masks [T, N] (1.0 when the union is empty)."""
    union = np.logical_or.reduce(flat, axis=0).sum()
    return float(np.logical_and.reduce(flat, axis=0).sum() / union) if union else 1.0


def intersections(flat: np.ndarray) -> np.ndarray:
    """[T, T] number of weights both tasks use (diagonal: each task's count), by popcount over
    the packed masks (exact at any size, unlike a float32 product past 2^24 weights)."""
    return packed_intersections(np.packbits(flat, axis=1))


def pairwise_overlap(flat: np.ndarray, inter: np.ndarray | None = None) -> np.ndarray:
    """[T, T] overlap ratio of each pair of tasks: |M_i & M_j| / |M_i | M_j| (from `inter`, the
    masks' intersections, when the caller has them already)."""
    inter = intersections(flat) if inter is None else inter
    counts = np.diag(inter)
    union = counts[:, None] + counts[None, :] - inter
    return np.divide(inter, union, out=np.ones(inter.shape), where=union > 0)


def density(flat: np.ndarray) -> np.ndarray:
    """[T] fraction of the weights each task keeps."""
    return flat.mean(axis=1)


def _task_sets(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct columns of flat [T, N] (each weight's set of tasks) as bool rows [K, T], with
    the index of each weight's set and each set's count. Rows of packed bits are compared as
    single opaque values: 7x faster than np.unique(axis=0)."""
    n_tasks = flat.shape[0]
    packed = np.ascontiguousarray(np.packbits(flat.reshape(n_tasks, -1).T, axis=1))  # one row of bits per weight
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    distinct, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    rows = distinct.view(np.uint8).reshape(len(distinct), packed.shape[1])
    return np.unpackbits(rows, axis=1, count=n_tasks).astype(bool), inverse.ravel(), counts


def subset_counts(flat: np.ndarray, task_names: list[str], top: int | None = None) -> list[dict]:
    """How many weights each exact subset of tasks uses (and no other task), largest first; only the
    `top` largest with `top` given (with many tasks nearly every weight has a set of its own).

    The empty subset (weights no task uses) is reported too, as tasks = [].
    """
    return _ranked_subsets(_task_sets(flat), task_names, top)


def _ranked_subsets(sets: tuple, task_names: list[str], top: int | None) -> list[dict]:
    members, _, counts = sets
    chosen = np.arange(len(counts))
    if top is not None and len(counts) > top:
        empty = np.flatnonzero(~members.any(1))
        chosen = np.union1d(np.argsort(-counts, kind="stable")[:top], empty)
    result = [{"tasks": [task_names[i] for i in np.flatnonzero(members[k])], "count": int(counts[k])}
              for k in chosen]
    return sorted(result, key=lambda r: (-r["count"], r["tasks"]))


def overlap_report(masks: dict[str, np.ndarray], task_names: list[str]) -> dict:
    """Everything the CLI and app show about masks: global, pairwise, per layer, subsets."""
    flat = flatten(masks)
    layers = by_layer(masks)
    inter = intersections(flat)  # the costly part, counted once for both entries
    sets = _task_sets(flat)
    return {
        "global": overlap_ratio(flat),
        "pairwise": pairwise_overlap(flat, inter).tolist(),
        "intersections": inter.tolist(),
        "density": dict(zip(task_names, density(flat).tolist())),
        "per_layer": [{"layer": layer, "global": overlap_ratio(f), "density": density(f).tolist()}
                      for layer, f in layers.items()],
        "subsets": _ranked_subsets(sets, task_names, SUBSETS_KEPT),
        "subset_total": len(sets[2]),
    }


SUBSETS_KEPT = 100  # the report's largest exact task sets; the rest are counted


def cluster_order(pairwise: np.ndarray) -> list[int]:
    """Task order that puts tasks with overlapping masks next to each other (average-linkage
    clustering on 1 - overlap), so a heatmap of 100 tasks shows its blocks."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    n = len(pairwise)
    if n < 3:
        return list(range(n))
    distance = 1.0 - np.asarray(pairwise, dtype=np.float64)
    np.fill_diagonal(distance, 0.0)
    return leaves_list(linkage(squareform(distance, checks=False), method="average")).tolist()


def set_label(names: list[str], most: int = 4) -> str:
    """A task set's name: its tasks joined by '+', or past `most` tasks their count and the first few."""
    if len(names) <= most:
        return " + ".join(names)
    return f"{len(names)} tasks: {', '.join(names[:3])}, ..."


def weight_task_sets(mask: np.ndarray, task_names: list[str], top: int = 8) -> tuple[np.ndarray, list[str]]:
    """For one parameter's masks [T, *shape]: a category per weight (0 = no task, 1..top = the most
    common task sets, top + 1 = any other set) and each category's label."""
    members, inverse, counts = _task_sets(mask)
    empty = ~members.any(1)
    ranked = [i for i in np.argsort(-counts) if not empty[i]][:top]
    category = np.full(len(members), top + 1)
    category[empty] = 0
    labels = ["no task"] + [set_label([task_names[t] for t in np.flatnonzero(members[i])]) for i in ranked]
    for rank, i in enumerate(ranked, start=1):
        category[i] = rank
    if len(ranked) < (~empty).sum():
        labels.append("other task sets")
    return category[inverse].reshape(mask.shape[1:]), labels


def group_density(mask: np.ndarray, axis: int, size: int) -> np.ndarray:
    """For one parameter's masks [T, *shape]: the fraction of each consecutive run of `size` rows
    (axis 0) or columns (axis 1) that each task keeps, [T, groups] (an attention head's weights)."""
    mask = np.moveaxis(np.asarray(mask, dtype=bool), axis + 1, 1)
    groups = mask.reshape(mask.shape[0], mask.shape[1] // size, -1)
    return groups.mean(-1)
