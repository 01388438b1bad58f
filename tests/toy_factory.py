"""Dataset factories for tests/test_api.py and tests/test_streaming.py: functions a config names by
`source: "toy_factory:..."`."""

import os

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, TensorDataset


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


class BlobRows(Dataset):
    """The blobs as a map-style Dataset of (x, y) rows: a task that streams."""

    classes = ["low", "high"]

    def __init__(self, n: int, seed: int, shift: float = 2.0, label: int | None = None):
        rng = np.random.RandomState(seed)
        self.y = rng.randint(0, 2, n) if label is None else np.full(n, label)
        self.x = (rng.randn(n, 6) + shift * self.y[:, None]).astype(np.float32)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def streamed_blobs(n: int = 200, seed: int = 0, with_test: bool = True):
    """The blobs streamed: Datasets per split, a given test split of 30 rows all of class 1."""
    splits = {"train": BlobRows(n, seed)}
    if with_test:
        splits["test"] = BlobRows(30, seed + 1, label=1)
    return splits


class Broken(BlobRows):
    def __getitem__(self, i):
        if i > 3:
            raise KeyError(f"row {i} is missing")
        return super().__getitem__(i)


def broken_rows():
    return Broken(100, 0)


def mixed():
    return {"train": BlobRows(50, 0), "test": (np.zeros((5, 6)), np.zeros(5))}


def plain_rows():
    """Rows without a `classes` list: the config must say how many classes."""
    rows = BlobRows(60, 0)
    return TensorDataset(torch.as_tensor(rows.x), torch.as_tensor(rows.y))


class _Endless(IterableDataset):
    def __iter__(self):
        while True:
            yield np.zeros(6, dtype=np.float32), 0


def iterable_rows():
    return _Endless()


class Interrupting(BlobRows):
    """Blobs that stop the run (as Ctrl-C does) after LSMN_TEST_STOP_AFTER rows read, if it is set."""

    reads = 0

    def __getitem__(self, i):
        Interrupting.reads += 1
        if Interrupting.reads > int(os.environ.get("LSMN_TEST_STOP_AFTER") or 10**12):
            raise KeyboardInterrupt
        return super().__getitem__(i)


def interrupting_blobs(n: int = 200):
    return Interrupting(n, 0)
