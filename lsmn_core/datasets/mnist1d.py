"""`mnist1d`: MNIST-1D (Greydanus 2020), a 1-D signal modality, generated locally with its default
settings (never downloaded); its own test set is kept. Targets: the digit and class subsets."""

from __future__ import annotations

import functools

import numpy as np

from lsmn_core.config import DataConfig
from lsmn_core.data.sources import LoadedTask
from lsmn_core.data.splits import assemble_splits
from lsmn_core.datasets.subsets import subset_splits
from lsmn_core.errors import DataError

NAME = "mnist1d"


@functools.lru_cache(maxsize=1)
def generated() -> dict[str, np.ndarray]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError("mnist1d is not installed: run 'pip install mnist1d'") from None
    return make_dataset(get_dataset_args())


def load(target=None, *, data: DataConfig) -> LoadedTask:
    raw = generated()
    given = {"train": (raw["x"].astype(np.float32), raw["y"].astype(np.int64)),
             "test": (raw["x_test"].astype(np.float32), raw["y_test"].astype(np.int64))}
    splits = assemble_splits(given, data)  # dev drawn here: a class subset keeps its classes' rows of each split
    published = frozenset(given)
    if target in (None, "digit"):
        return LoadedTask(splits, "classification", 10, "sequence", published=published)
    return LoadedTask(subset_splits(splits, target, NAME, "digit"), "classification", 2, "sequence",
                      published=published)
