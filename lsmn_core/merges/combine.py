"""Merging one tensor: its task vectors, chunk by chunk of rows (a fixed number of elements per chunk,
so that a random method draws the same numbers whatever holds the chunks), into each task's part and
the method's masks; then the parts' weighted sum. The task vectors run and the merge writer both go
through here, so a merge evaluated in the Studio is the merge it writes."""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import torch

from lsmn_core.merges.matrix import MatrixMerge
from lsmn_core.merges.method import MergeMethod, Recipe

CHUNK = 1 << 18  # elements per chunk of rows
WHOLE = 1 << 23  # up to this many elements, a tensor's vectors of every task are read at once


def row_chunks(shape: tuple[int, ...] | torch.Size) -> list[slice]:
    """The chunks of rows (along the first dimension) a tensor of `shape` is merged in."""
    if len(shape) == 0:
        return [slice(None)]
    row = max(1, math.prod(shape[1:]))
    step = max(1, CHUNK // row)
    return [slice(start, min(start + step, shape[0])) for start in range(0, shape[0], step)]


def chunk_generator(recipe: Recipe, name: str, chunk: int) -> torch.Generator:
    """The random numbers of one chunk of one tensor: from the recipe's seed, the name and the chunk."""
    return torch.Generator().manual_seed((recipe.seed * 1_000_003 + zlib.crc32(name.encode()) * 1009 + chunk)
                                         % 2**63)


def merged_chunks(method: MergeMethod, recipe: Recipe, name: str, shape: tuple[int, ...],
                  deltas_of: Callable[[slice], torch.Tensor], levels: list[float | None]):
    """For each chunk of rows: (rows, parts [T, ...], masks [T or 1, ...] or None), from the task
    vectors `deltas_of(rows)` [T, rows, ...] in float32."""
    for index, rows in enumerate(row_chunks(shape)):
        deltas = deltas_of(rows)
        yield rows, method.parts(deltas, levels, recipe, chunk_generator(recipe, name, index)), \
            method.masks(deltas, recipe)


def weighted(parts: torch.Tensor, masks: torch.Tensor | None, weights: torch.Tensor, lam: float,
             own: bool = False) -> torch.Tensor:
    """lambda x sum_t weights[t] x parts[t], under the masks: [1, ...] for all tasks, or [T, ...] with a
    per-task method's masks; with `own` (a compression), each task's lambda x weights[t] x parts[t]
    alone [T, ...]."""
    if own:
        return lam * weights.to(parts.dtype).view(-1, *[1] * (parts.dim() - 1)) * parts
    merged = lam * torch.tensordot(weights.to(parts.dtype), parts, dims=1).unsqueeze(0)
    return merged if masks is None else merged * masks


def merge_tensor(method: MergeMethod, recipe: Recipe, name: str, shape: tuple[int, ...],
                 task_delta: Callable[[int], torch.Tensor], chunk_deltas: Callable[[slice], torch.Tensor], tasks: int):
    """One tensor's merge, chunk by chunk: (rows, parts, masks) as merged_chunks gives them, after each
    task's level over its whole tensor (`task_delta(t)`, one task at a time, past WHOLE elements); or in
    one piece, for a method that merges the tensor whole (a matrix's SVDs)."""
    if isinstance(method, MatrixMerge) and method.whole(name, shape, recipe):
        deltas = chunk_deltas(slice(None))
        yield slice(None), method.whole_parts(name, deltas.float(), recipe).to(deltas.dtype), None
        return
    if method.needs_level and tasks * math.prod(shape) <= WHOLE:  # read once, for the levels and the parts
        whole = chunk_deltas(slice(None))

        def chunk_deltas(rows: slice) -> torch.Tensor:
            return whole[:, rows] if shape else whole

        task_delta = whole.__getitem__
    levels = [method.level(task_delta(t), recipe) if method.needs_level else None for t in range(tasks)]
    yield from merged_chunks(method, recipe, name, shape, chunk_deltas, levels)
