"""Mask overlap (sparse-sharing slides): OR(M_1..M_T) = |intersection| / |union|, and what each
subset of tasks uses. Pure functions of {parameter name: bool [T, *shape]} masks."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from analysis.bitcount import packed_intersections
from lsmn_core.network.layers import mask_layer


def intersections(masks: dict[str, np.ndarray]) -> np.ndarray:
    """[T, T] number of weights both tasks use (diagonal: each task's count), by popcount over
    the packed masks (exact at any size, unlike a float32 product past 2^24 weights)."""
    return packed_intersections(np.concatenate([np.packbits(r, axis=1) for r in _rows(masks)], axis=1))


def pairwise_overlap(inter: np.ndarray) -> np.ndarray:
    """[T, T] overlap ratio of each pair of tasks, |M_i & M_j| / |M_i | M_j|, from their intersections."""
    counts = np.diag(inter)
    union = counts[:, None] + counts[None, :] - inter
    return np.divide(inter, union, out=np.ones(inter.shape), where=union > 0)


def _rows(masks: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Each parameter's masks as bool [T, N_param] views (no copy of 1,000 tasks' masks side by side)."""
    return [np.asarray(m, dtype=bool).reshape(m.shape[0], -1) for m in masks.values()]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64s (wrapping arithmetic): every input bit reaches every output bit."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _distinct_rows(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.unique(packed, axis=0, return_inverse=True, return_counts=True) for uint8 rows [N, B], in
    hash order: rows are hashed to 64 bits and grouped by hash, and the grouping is checked row by
    row, so the result is exact (a hash collision, never seen, falls back to comparing whole rows).
    10x faster than comparing rows of 125 bytes for 1,000 tasks."""
    words = np.zeros((len(packed), -(-packed.shape[1] // 8) * 8), np.uint8)
    words[:, :packed.shape[1]] = packed
    with np.errstate(over="ignore"):
        digest = np.zeros(len(packed), np.uint64)
        for column in words.view(np.uint64).T:
            digest = _mix(digest ^ column)
    _, first, inverse, counts = np.unique(digest, return_index=True, return_inverse=True, return_counts=True)
    distinct = packed[first]
    if not np.array_equal(distinct[inverse.ravel()], packed):  # two task sets with one hash
        keys = np.ascontiguousarray(packed).view(np.dtype((np.void, packed.shape[1]))).ravel()
        _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
        distinct = packed[first]
    return distinct, inverse.ravel(), counts


CODED_TASKS = 16  # up to this many tasks, a weight's task set is a number below 2^16


def _coded_task_sets(rows: list[np.ndarray], n_tasks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """_task_sets for at most CODED_TASKS tasks: each weight's set as the number its packed bits read
    (task 0 the highest bit), counted by bincount; no hashing or sorting of 20M weights' rows."""
    width = 8 if n_tasks <= 8 else 16
    dtype = np.uint8 if width == 8 else np.uint16
    codes = np.zeros(sum(r.shape[1] for r in rows), dtype)
    start = 0
    for r in rows:
        part = codes[start:start + r.shape[1]]
        for task, used in enumerate(r):
            part |= used.astype(dtype) << dtype(width - 1 - task)
        start += r.shape[1]
    counts = np.bincount(codes, minlength=1 << width)
    present = np.flatnonzero(counts)
    rank = np.zeros(1 << width, np.intp)
    rank[present] = np.arange(len(present))
    distinct = np.stack([present >> 8, present & 0xFF], axis=1)[:, 2 - width // 8:].astype(np.uint8)
    return distinct, rank[codes], counts[present]


def _task_sets(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct task sets of the weights of `rows` (bool [T, N_param] each, weights in order) as
    packed bits [K, ceil(T / 8)] (see members), with the index of each weight's set and each set's count."""
    if rows and rows[0].shape[0] <= CODED_TASKS:
        return _coded_task_sets(rows, rows[0].shape[0])
    packed = np.concatenate([np.packbits(r.T, axis=1) for r in rows])  # one row of bits per weight
    return _distinct_rows(packed)


def _members(sets: np.ndarray, chosen: np.ndarray, n_tasks: int) -> np.ndarray:
    """bool [len(chosen), T]: the tasks of each chosen set (unpacked for these only: 1,000 tasks'
    weights have 57,000 distinct sets, and a page shows a hundred)."""
    return np.unpackbits(sets[chosen], axis=1, count=n_tasks).astype(bool)


SUBSETS_KEPT = 100  # the report's largest exact task sets; the rest are counted


def _ranked_subsets(sets: tuple, task_names: list[str], top: int | None) -> list[dict]:
    distinct, _, counts = sets
    chosen = np.arange(len(counts))
    if top is not None and len(counts) > top:
        empty = np.flatnonzero(~distinct.any(1))
        chosen = np.union1d(np.argsort(-counts, kind="stable")[:top], empty)
    members = _members(distinct, chosen, len(task_names))
    result = [{"tasks": [task_names[i] for i in np.flatnonzero(used)], "count": int(counts[k])}
              for k, used in zip(chosen, members)]
    return sorted(result, key=lambda r: (-r["count"], r["tasks"]))


def overlap_report(masks: dict[str, np.ndarray], task_names: list[str], top: int | None = SUBSETS_KEPT,
                   layers: Mapping[str, int] | None = None, groups: Mapping[str, str] | None = None) -> dict:
    """Everything the CLI and app show about masks: global, pairwise, per layer (each mask's from
    `layers`, else read from its name), per kind of module where `groups` names them (a
    checkpoint's query, key, value, ...), and how many weights each exact subset of tasks uses and
    no other task (the `top` largest, with the empty subset as tasks = []; with many tasks nearly
    every weight has a set of its own). Counted parameter by parameter, so 1,000 tasks' masks are
    never copied side by side."""
    rows = _rows(masks)
    layers_of = np.array([layers[name] if layers is not None else mask_layer(name) for name in masks])
    kinds = np.array([groups.get(name, "other") for name in masks]) if groups else None
    sizes = np.array([r.shape[1] for r in rows])
    kept = np.stack([r.sum(1) for r in rows], axis=1)  # [T, P] weights each task keeps of each parameter
    by_all = np.array([np.logical_and.reduce(r, axis=0).sum() for r in rows])
    by_any = np.array([np.logical_or.reduce(r, axis=0).sum() for r in rows])

    def ratio(of: np.ndarray) -> float:  # |intersection| / |union| over the parameters picked by `of`
        union = by_any[of].sum()
        return float(by_all[of].sum() / union) if union else 1.0

    inter = intersections(masks)
    sets = _task_sets(rows)
    every = np.ones(len(rows), bool)

    def part(of: np.ndarray) -> dict:
        return {"global": ratio(of), "density": (kept[:, of].sum(1) / sizes[of].sum()).tolist()}

    report = {
        "global": ratio(every),
        "pairwise": pairwise_overlap(inter).tolist(),
        "intersections": inter.tolist(),
        "density": dict(zip(task_names, (kept.sum(1) / sizes.sum()).tolist())),
        "per_layer": [{"layer": int(layer), **part(layers_of == layer)} for layer in np.unique(layers_of)],
        "subsets": _ranked_subsets(sets, task_names, top),
        "subset_total": len(sets[2]),
    }
    if kinds is not None:
        report["per_group"] = [{"group": str(kind), **part(kinds == kind)} for kind in dict.fromkeys(kinds)]
    return report


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
    distinct, inverse, counts = _task_sets(_rows({"mask": mask}))
    empty = np.asarray(~distinct.any(1))
    ranked = [i for i in np.argsort(-counts) if not empty[i]][:top]
    category = np.full(len(distinct), top + 1)
    category[empty] = 0
    members = _members(distinct, np.array(ranked, dtype=int), len(task_names))
    labels = ["no task"] + [set_label([task_names[t] for t in np.flatnonzero(used)]) for used in members]
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
