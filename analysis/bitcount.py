"""Pairwise intersections of bit-packed masks without unpacking them: for every pair of tasks, the
popcount of the AND of their packed rows. 1,000 tasks x 10M weights are 1.25 GB packed (40 GB as
float32), and a GEMM over unpacked bits would do 64x the work of a 64-bit AND + popcount.

The CPU kernel is compiled by numba (cached on disk after the first call): a 4 x 4 tile of task
pairs per inner loop, so that each loaded word serves four pairs, over column chunks that stay in
cache. Masks of at most SMALL_BITS bits in all are unpacked and multiplied instead, which a new
process does at once where loading the cached kernel takes 0.4 s (the app's first page). On a GPU
the bits are unpacked there, a slice at a time, and counted by int8 matrix products on its tensor
cores: 64x the work of the popcounts, done hundreds of times faster.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange, types
from numba.extending import intrinsic

from lsmn_core.network import bitmasks

CHUNK_WORDS = 1024  # 8 KB of every task's row at a time


@intrinsic
def _popcount(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


@njit(boundscheck=False, cache=True)
def _tile_row(words: np.ndarray, out: np.ndarray, bi: int, c0: int, c1: int, last: int) -> None:
    """Add the counts of columns c0:c1 to the 4 x 4 tiles of tile row bi, on and left of the diagonal."""
    i = 4 * bi
    a0 = words[min(i, last), c0:c1]
    a1 = words[min(i + 1, last), c0:c1]
    a2 = words[min(i + 2, last), c0:c1]
    a3 = words[min(i + 3, last), c0:c1]
    for bj in range(bi + 1):
        j = 4 * bj
        b0 = words[min(j, last), c0:c1]
        b1 = words[min(j + 1, last), c0:c1]
        b2 = words[min(j + 2, last), c0:c1]
        b3 = words[min(j + 3, last), c0:c1]
        s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = 0
        s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = 0
        for w in range(c1 - c0):
            x0 = a0[w]
            x1 = a1[w]
            x2 = a2[w]
            x3 = a3[w]
            y0 = b0[w]
            y1 = b1[w]
            y2 = b2[w]
            y3 = b3[w]
            s00 += _popcount(x0 & y0)
            s01 += _popcount(x0 & y1)
            s02 += _popcount(x0 & y2)
            s03 += _popcount(x0 & y3)
            s10 += _popcount(x1 & y0)
            s11 += _popcount(x1 & y1)
            s12 += _popcount(x1 & y2)
            s13 += _popcount(x1 & y3)
            s20 += _popcount(x2 & y0)
            s21 += _popcount(x2 & y1)
            s22 += _popcount(x2 & y2)
            s23 += _popcount(x2 & y3)
            s30 += _popcount(x3 & y0)
            s31 += _popcount(x3 & y1)
            s32 += _popcount(x3 & y2)
            s33 += _popcount(x3 & y3)
        tile = out[i : i + 4, j : j + 4]
        tile[0, 0] += s00
        tile[0, 1] += s01
        tile[0, 2] += s02
        tile[0, 3] += s03
        tile[1, 0] += s10
        tile[1, 1] += s11
        tile[1, 2] += s12
        tile[1, 3] += s13
        tile[2, 0] += s20
        tile[2, 1] += s21
        tile[2, 2] += s22
        tile[2, 3] += s23
        tile[3, 0] += s30
        tile[3, 1] += s31
        tile[3, 2] += s32
        tile[3, 3] += s33


@njit(parallel=True, boundscheck=False, cache=True)
def _lower_tiles(words: np.ndarray, chunk: int) -> np.ndarray:
    """Intersection counts of all row pairs in 4 x 4 tiles on and below the diagonal (padded). Tile
    row bi holds bi + 1 tiles, so each parallel step takes a short row and a long one (k and
    tiles - 1 - k): a static split of the rows would leave one thread 3x the work of the other."""
    n_rows, n_words = words.shape
    tiles = (n_rows + 3) // 4
    out = np.zeros((tiles * 4, tiles * 4), np.int64)
    last = n_rows - 1
    for c0 in range(0, n_words, chunk):
        c1 = min(c0 + chunk, n_words)
        for k in prange((tiles + 1) // 2):
            _tile_row(words, out, k, c0, c1, last)
            if tiles - 1 - k != k:
                _tile_row(words, out, tiles - 1 - k, c0, c1, last)
    return out


def packed_intersections(packed: np.ndarray, device: str = "cpu") -> np.ndarray:
    """[T, T] number of weights both tasks use, from masks packed with np.packbits along axis 1
    (uint8 [T, ceil(N / 8)]); the diagonal holds each task's count. `device` other than "cpu": a
    torch device to count on (`device_intersections`)."""
    n_tasks, n_bytes = packed.shape
    if n_tasks == 0:
        return np.zeros((0, 0), np.int64)
    if device != "cpu":
        return device_intersections(packed, device)
    if n_tasks * n_bytes * 8 <= SMALL_BITS:
        return unpacked_intersections(packed)
    return tile_intersections(packed)


def tile_intersections(packed: np.ndarray) -> np.ndarray:
    """`packed_intersections` by numba's popcount tiles (T >= 1)."""
    n_tasks, n_bytes = packed.shape
    padding = -n_bytes % 8  # zero bytes: they add nothing to any count
    rows = np.ascontiguousarray(packed if not padding else np.pad(packed, ((0, 0), (0, padding))))
    tiles = _lower_tiles(rows.view(np.uint64), CHUNK_WORDS)[:n_tasks, :n_tasks]
    lower = np.tril(tiles)
    return lower + np.tril(lower, -1).T


SMALL_BITS = 1 << 22  # 4M bits unpack to 16 MB of float32 and multiply in milliseconds


def unpacked_intersections(packed: np.ndarray) -> np.ndarray:
    """`packed_intersections` of small masks: the bits unpacked to float32 and bits @ bits.T (exact:
    every count is below 2^24)."""
    bits = np.unpackbits(packed, axis=1).astype(np.float32)
    return np.rint(bits @ bits.T).astype(np.int64)


def device_intersections(packed: np.ndarray, device: str, chunk_bytes: int = 1 << 16) -> np.ndarray:
    """`packed_intersections` on a torch device: each slice of `chunk_bytes` bytes of every row is
    unpacked there to int8 bits, and bits @ bits.T (int32, exact within a slice) adds to an int64
    total. The rows are padded to what torch._int_mm takes (more than 16, a multiple of 8)."""
    n_tasks, n_bytes = packed.shape
    rows = max(24, -(-n_tasks // 8) * 8)
    on_device = torch.zeros((rows, n_bytes + n_bytes % 2), dtype=torch.uint8, device=device)  # slices of >= 16 bits
    on_device[:n_tasks, :n_bytes] = torch.from_numpy(np.ascontiguousarray(packed)).to(device, non_blocking=True)
    total = torch.zeros((rows, rows), dtype=torch.int64, device=device)
    for start in range(0, on_device.shape[1], chunk_bytes):
        packed_slice = on_device[:, start : start + chunk_bytes]
        bits = bitmasks.unpack(packed_slice, 8 * packed_slice.shape[1]).view(torch.int8)
        total += torch._int_mm(bits, bits.T)
    return total[:n_tasks, :n_tasks].cpu().numpy()
