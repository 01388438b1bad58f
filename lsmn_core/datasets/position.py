"""`position`: digit images with a bright 2 x 2 marker at a random place, the target the marker's
cell. The input looks like the digit tasks' input, but the answer has nothing to do with the digit:
the unrelated task (the sparse-sharing slides' position prediction) that provokes negative transfer."""

from __future__ import annotations

import numpy as np

from lsmn_core.config import DataConfig
from lsmn_core.data.sources import LoadedTask
from lsmn_core.data.splits import split_indices
from lsmn_core.datasets import digits
from lsmn_core.errors import DataError

CELLS = 49  # a 2 x 2 marker fits at 7 x 7 places of an 8 x 8 image


def marked_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n digit images, each with its marker, and the markers' cells."""
    pixels, _ = digits.images()
    rng = np.random.RandomState(seed + 7919)
    pick = rng.randint(0, len(pixels), size=n)
    cells = rng.randint(0, CELLS, size=n)
    out = pixels[pick].copy()
    for i, cell in enumerate(cells):
        r, c = divmod(cell, 7)
        out[i, r : r + 2, c : c + 2] = 1.0
    return out, cells.astype(np.int64)


def load(target=None, *, data: DataConfig) -> LoadedTask:
    if target not in (None, "cell"):
        raise DataError("position has one target, 'cell'")
    x, cells = marked_images(len(digits.images()[1]), data.split_seed)
    rows = split_indices(len(x), data)
    return LoadedTask({k: (x[i], cells[i]) for k, i in rows.items()}, "classification", CELLS, "image")
