"""The order a file too large for memory is trained in: contiguous chunks, shuffled in a buffer.

Random rows of a file that the page cache does not hold cost a disk seek each, so a batch of 256
rows drawn from the whole file waits on 256 seeks. Streaming loaders' shuffle buffers read the file
in long runs instead and shuffle within what they hold; `ChunkedOrder` does the same as an index
stream. Each pass over the file takes its chunks (`chunk_rows` consecutive rows) in a seeded random
order, `window` chunks at a time, and draws batches from a shuffle of those chunks' rows; the rows a
window leaves over go with the next one. Every row is drawn once per pass. Unlike a full shuffle, a
batch's rows come from the `window` chunks being read, not from anywhere in the file, and a row's
neighbours within its chunk are likely to be drawn in the same few dozen batches. Each window is
announced (`ahead`) one window before its batches are drawn, so that its file can read it while
the steps run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

Ranges = list[tuple[int, int]]  # [start, stop) row ranges


class ChunkedOrder:
    """Endless batches (lists of row indices, ascending within a batch) over `n` rows; `skip` batches
    are drawn and dropped first, so that a resumed run continues the same stream."""

    def __init__(self, n: int, size: int, chunk_rows: int, seed: int, skip: int = 0, window: int = 8,
                 ahead: Callable[[Ranges], None] | None = None):
        self.n, self.size, self.chunk_rows, self.window = n, size, max(1, chunk_rows), max(1, window)
        self.generator = np.random.default_rng(seed)
        self.ahead: Callable[[Ranges], None] | None = None  # not told of the windows that `skip` passes
        self._batches = self._drawn()
        for _ in range(skip):
            next(self._batches)
        self.ahead = ahead

    def _windows(self) -> Iterator[Ranges]:
        starts = np.arange(0, self.n, self.chunk_rows)
        while True:
            order = starts[self.generator.permutation(len(starts))]
            for i in range(0, len(order), self.window):
                yield [(int(s), min(int(s) + self.chunk_rows, self.n)) for s in order[i : i + self.window]]

    def _drawn(self) -> Iterator[list[int]]:
        windows = self._windows()
        upcoming, told = next(windows), False
        left = np.empty(0, np.int64)
        while True:
            current, upcoming = upcoming, next(windows)
            if self.ahead is not None:
                self.ahead(upcoming if told else current + upcoming)
                told = True
            rows = np.concatenate([left, *(np.arange(a, b) for a, b in current)])
            rows = rows[self.generator.permutation(len(rows))]
            full = len(rows) // self.size * self.size
            for start in range(0, full, self.size):
                yield np.sort(rows[start : start + self.size]).tolist()
            left = rows[full:]

    def __iter__(self) -> Iterator[list[int]]:
        return self._batches
