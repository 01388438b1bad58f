"""Pairwise intersections of bit-packed masks without unpacking them: for every pair of tasks, the
popcount of the AND of their packed rows. 1,000 tasks x 10M weights are 1.25 GB packed (40 GB as
float32), and a GEMM over unpacked bits would do 64x the work of a 64-bit AND + popcount.

On a CPU the popcounts run in numba's tiles (popcount_tiles.py); masks of at most SMALL_BITS bits in
all are unpacked and multiplied instead, which a new process does at once where numba's import
and load take most of a second. On a GPU the bits are unpacked there, a slice at a time, and
counted by int8 matrix products on its tensor cores: 64x the work of the popcounts, done hundreds
of times faster.
"""

from __future__ import annotations

import numpy as np
import torch

from lsmn_core.network import bitmasks


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
    from analysis.popcount_tiles import tile_intersections  # numba, loaded only where it pays

    return tile_intersections(packed)


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
