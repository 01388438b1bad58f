"""Dataset factories for tests/test_api.py: functions a config names by `source: "toy_factory:..."`."""

import numpy as np


def blobs(n: int = 200, seed: int = 0, with_test: bool = True):
    """Two Gaussian blobs in 6 dimensions; a given test split whose rows lie apart from the training ones."""
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 2, n)
    x = rng.randn(n, 6) + 2.0 * y[:, None]
    splits = {"train": (x, y)}
    if with_test:
        y_test = np.ones(30, dtype=int)
        splits["test"] = (rng.randn(30, 6) + 2.0, y_test)
    return splits


def not_arrays():
    return [1, 2, 3]


def ragged():
    return np.zeros((10, 3)), np.zeros(7)
