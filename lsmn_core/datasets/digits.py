"""`digits`: scikit-learn's 8 x 8 handwritten digits (values 0..1), with derived targets (the digit,
parity, >= 5, mod 3, closed loops, one digit against the rest) and class subsets, so that related
and unrelated tasks share one input."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lsmn_core.config import DataConfig
from lsmn_core.data.sources import LoadedTask
from lsmn_core.data.splits import split_indices
from lsmn_core.datasets.subsets import subset_splits

NAME = "digits"
TARGETS: dict[str, tuple[int, Callable[[np.ndarray], np.ndarray]]] = {
    "digit": (10, lambda d: d),
    "parity": (2, lambda d: d % 2),
    "ge5": (2, lambda d: (d >= 5).astype(np.int64)),
    "mod3": (3, lambda d: d % 3),
    "loops": (3, lambda d: np.array([1, 0, 0, 0, 1, 0, 1, 0, 2, 1])[d]),  # closed loops in the glyph
    **{f"is{k}": (2, functools.partial(lambda d, k: (d == k).astype(np.int64), k=k))  # one digit against the rest
       for k in range(10)},
}


@functools.lru_cache(maxsize=1)
def images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (8x8, 0..16) scaled to 0..1, and their digits; read once per process,
    callers never modify the arrays.

    The CSV that load_digits reads ships inside scikit-learn; reading it with numpy directly avoids
    importing scikit-learn (about 1.5 s), which keeps `lsmn eval` and the app's first view quick.
    """
    spec = importlib.util.find_spec("sklearn")
    where = spec.submodule_search_locations if spec else None
    csv = Path(where[0]) / "datasets" / "data" / "digits.csv.gz" if where else None
    if csv is not None and csv.is_file():
        table = np.loadtxt(csv, delimiter=",")
        pixels, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels, target = bunch.images, bunch.target
    return (pixels / 16.0).astype(np.float32), target.astype(np.int64)


def load(target, *, data: DataConfig) -> LoadedTask:
    """A target over the digits, split by data.split_seed (a class subset keeps its classes' rows of
    each split)."""
    x, digits = images()
    rows = split_indices(len(digits), data)
    if target in TARGETS:
        n_outputs, label = TARGETS[target]
        y = label(digits).astype(np.int64)
        return LoadedTask({k: (x[i], y[i]) for k, i in rows.items()}, "classification", n_outputs, "image")
    splits = subset_splits({k: (x[i], digits[i]) for k, i in rows.items()}, target, NAME, ", ".join(TARGETS))
    return LoadedTask(splits, "classification", 2, "image")
