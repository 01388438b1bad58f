"""Train, dev and test splits: fixed permutations seeded by data.split_seed, and the splits a task
is missing drawn from its training rows."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from torch.utils.data import Dataset, Subset

from lsmn_core.config import DataConfig
from lsmn_core.data.streaming import length

Arrays = tuple[np.ndarray, np.ndarray]  # a split's inputs and targets


def split_indices(n: int, data: DataConfig) -> dict[str, np.ndarray]:
    """A fixed permutation of n samples (seeded by data.split_seed) cut into train/dev/test."""
    order = np.random.RandomState(data.split_seed).permutation(n)
    n_test = max(1, int(round(n * data.test_fraction)))
    n_dev = max(1, int(round(n * data.dev_fraction)))
    return {"test": order[:n_test], "dev": order[n_test : n_test + n_dev], "train": order[n_test + n_dev :]}


def _drawn_rows(n: int, given: set[str], data: DataConfig) -> dict[str, np.ndarray]:
    """Which training rows stay for training and which form the splits not given (seeded by
    data.split_seed)."""
    if "dev" not in given and "test" not in given:
        return split_indices(n, data)
    if "dev" not in given:  # a published test set: dev carved from the training rows
        drawn = split_indices(n, DataConfig(data.split_seed, data.dev_fraction, 0.01))
        return {"train": np.concatenate([drawn["train"], drawn["test"]]), "dev": drawn["dev"]}
    if "test" not in given:
        order = np.random.RandomState(data.split_seed).permutation(n)
        n_test = max(1, int(round(n * data.test_fraction)))
        return {"test": order[:n_test], "train": order[n_test:]}
    return {"train": np.arange(n)}


def assemble_splits(given: Mapping[str, Arrays], data: DataConfig) -> dict[str, Arrays]:
    """The given splits as given; a missing dev or test split drawn from the training rows."""
    x, y = given["train"]
    splits = {split: (x[i], y[i]) for split, i in _drawn_rows(len(y), set(given), data).items()}
    splits.update({split: given[split] for split in ("dev", "test") if split in given})
    return {split: splits[split] for split in ("train", "dev", "test")}


def assemble_streams(given: Mapping[str, Dataset], data: DataConfig) -> dict[str, Dataset]:
    """The same for a streamed task's Datasets: missing splits are Subsets of the training rows."""
    train = given["train"]
    splits: dict[str, Dataset] = {split: Subset(train, i.tolist())
                                  for split, i in _drawn_rows(length(train), set(given), data).items()}
    splits.update({split: given[split] for split in ("dev", "test") if split in given})
    return {split: splits[split] for split in ("train", "dev", "test")}
