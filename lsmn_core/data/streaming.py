"""A task's rows on the training device, or streamed from a torch Dataset in batches.

Array tasks keep each split as two tensors on the training device (`TensorSplit`), as small data
trains fastest. A task whose factory returns Datasets keeps them where they are and reads one batch
at a time through a DataLoader (`StreamedSplit`), so data larger than memory trains. Both answer the
trainer the same questions: how many rows, a random training batch, the rows in order.

A streamed split draws its training batches from its own seeded stream of indices, so that the
DataLoader's workers can read ahead; the batches it has handed out are counted, checkpointed and
replayed on resume, and the same seed gives the same batches whatever the number of workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sized
from typing import cast
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from typing_extensions import TypeIs
from torch.utils.data import DataLoader, Dataset, IterableDataset

from lsmn_core.data.chunked_order import ChunkedOrder
from lsmn_core.errors import DataError


@dataclass
class LoaderOptions:
    """How streamed tasks are read: DataLoader worker processes and pinned host memory."""

    workers: int = 0
    pin_memory: bool = False


class TensorSplit:
    """One split held as tensors on the training device, sampled by index."""

    def __init__(self, x, y, device: torch.device):
        self.x, self.y = torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, size: int, generator: torch.Generator | None):
        idx = torch.randint(len(self.y), (min(size, len(self.y)),), generator=generator).to(self.x.device,
                                                                                            non_blocking=True)
        return self.x[idx], self.y[idx]

    def in_order(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self.y), size):
            yield self.x[i : i + size], self.y[i : i + size]


class _IndexStream:
    """Endless batches of random row indices from a seeded generator (a DataLoader batch sampler)."""

    def __init__(self, n: int, size: int, seed: int, skip: int = 0):
        self.n, self.size, self.generator = n, size, torch.Generator().manual_seed(seed)
        for _ in range(skip):
            self._next()

    def _next(self) -> list[int]:
        return torch.randint(self.n, (self.size,), generator=self.generator).tolist()

    def __iter__(self):
        while True:
            yield self._next()


class StreamedSplit:
    """One split read from a map-style Dataset of (x, y) pairs through a DataLoader."""

    def __init__(self, dataset: Dataset, task: str, device: torch.device, options: LoaderOptions, seed: int,
                 checks: dict):
        self.dataset, self.task, self.device, self.options, self.seed = dataset, task, device, options, seed
        self.checks = checks  # input_shape and classes (0: regression): every batch is checked against them
        self.drawn = 0  # training batches handed out, for checkpoints
        self._stream: Iterator | None = None

    def __len__(self) -> int:
        return length(self.dataset)

    def _loader(self, **sampling) -> DataLoader:
        workers = self.options.workers
        return DataLoader(self.dataset, num_workers=workers, collate_fn=self._collate,
                          pin_memory=self.options.pin_memory and self.device.type == "cuda",
                          prefetch_factor=2 if workers else None, **sampling)

    def batch(self, size: int, generator: torch.Generator | None = None):
        """The next training batch of the split's own stream (`generator` is the in-memory path's)."""
        if self._stream is None:
            n, size = length(self.dataset), min(size, length(self.dataset))
            own = getattr(self.dataset, "index_stream", None)  # a dataset that reads faster in its own order
            sampler = (own(size, self.seed, self.drawn) if callable(own)
                       else _IndexStream(n, size, self.seed, self.drawn))
            self._stream = iter(self._loader(batch_sampler=sampler))
        batch = self._read(lambda: next(self._stream))
        self.drawn += 1
        return self._checked(batch)

    def seek(self, drawn: int) -> None:
        """Continue after `drawn` batches (a resumed run replays its stream's indices, not its reads)."""
        self._stream, self.drawn = None, drawn

    def in_order(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = iter(self._loader(batch_size=size, shuffle=False))
        while (batch := self._read(lambda: next(batches, None))) is not None:
            yield self._checked(batch)

    def _read(self, fetch):
        """A batch from the loader; a failure of the dataset's own code (in a worker or not) becomes one
        line naming the task, not a worker's traceback."""
        try:
            return fetch()
        except DataError as exc:  # from _collate: a worker's comes with its traceback
            message = str(exc).strip().splitlines()[-1].rpartition("DataError: ")[2][:400]
            raise DataError(f"task {self.task}: {message}") from None
        except Exception as exc:  # the user's Dataset may raise anything
            text = str(exc).strip()  # a worker's exception carries its traceback, whose last line names it
            last = text.splitlines()[-1] if "\n" in text else f"{type(exc).__name__}: {text}"
            raise DataError(f"task {self.task}: reading a batch of its dataset failed: {last[:300]}") from None

    @staticmethod
    def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack (x, y) pairs into a batch (in a worker when there are workers)."""
        try:
            x = torch.stack([torch.as_tensor(np.asarray(item[0])) for item in items])
            y = torch.as_tensor(np.asarray([np.asarray(item[1]) for item in items]))
        except (TypeError, ValueError, IndexError, RuntimeError) as exc:
            raise DataError(f"the dataset's items must be (x, y) pairs of arrays of one shape ({str(exc)[:200]})") \
                from None
        return x, y

    def _checked(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch on the device, checked against the task: its rows' shape, its labels' range."""
        x, y = batch
        shape, classes = self.checks["input_shape"], self.checks["classes"]
        if list(x.shape[1:]) != shape:
            raise DataError(f"task {self.task}: a row of shape {list(x.shape[1:])} where the task's rows are {shape}")
        if classes:
            if y.is_floating_point() or y.numel() and not (0 <= int(y.min()) and int(y.max()) < classes):
                raise DataError(f"task {self.task}: a label outside 0 .. {classes - 1} (the task's classes)")
            x, y = x.float(), y.long()
        else:
            x, y = x.float(), y.float()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def is_dataset(value) -> TypeIs[Dataset]:
    return isinstance(value, Dataset)


def length(dataset: Dataset) -> int:
    """The rows of a map-style Dataset (checked_dataset makes sure that it has a length)."""
    return len(cast(Sized, dataset))


def checked_dataset(task: str, split: str, dataset) -> Dataset:
    """A Dataset a task may stream from: map-style (rows by index), sized, with at least one row."""
    if isinstance(dataset, IterableDataset):
        raise DataError(f"task {task}: the {split} split is an IterableDataset; streaming reads rows by index, "
                        "so give a map-style Dataset (__getitem__ and __len__)")
    try:
        n = len(dataset)
    except TypeError:
        raise DataError(f"task {task}: the {split} split's Dataset has no length (define __len__)") from None
    if n < (5 if split == "train" else 1):
        raise DataError(f"task {task}: the {split} split's Dataset holds {n} rows"
                        + (" (at least 5 are needed)" if split == "train" else ""))
    return dataset


class ArrayFiles(Dataset):
    """Rows of .npy files (X [N, ...] and y [N]) read from disk a batch at a time.

    Each batch maps the files, copies its rows and unmaps them, so resident memory holds one
    batch, never the file: a 2 GB file trains in well under 1 GB (`lsmn bench`). Training reads
    them in chunks of CHUNK_BYTES shuffled in a buffer (`index_stream`, chunked_order.py), each
    window of chunks asked of the page cache while the window before it trains."""

    CHUNK_BYTES = 8 << 20

    def __init__(self, x: str | Path, y: str | Path):
        self.x_path, self.y_path = Path(x), Path(y)
        for path in (self.x_path, self.y_path):
            if not path.is_file():
                raise DataError(f"{path}: no such .npy file")
        try:
            inputs, labels = (np.load(path, mmap_mode="r") for path in (self.x_path, self.y_path))
        except (ValueError, OSError) as exc:
            raise DataError(f"cannot map {self.x_path.name} or {self.y_path.name} as .npy ({exc})") from None
        if len(inputs) != len(labels):
            raise DataError(f"{self.x_path.name} has {len(inputs)} rows and {self.y_path.name} {len(labels)}")
        self.rows = len(inputs)
        self.row_bytes = inputs.itemsize * int(np.prod(inputs.shape[1:]))  # a row of X, at x_offset + i x row_bytes
        self.x_offset = inputs.offset
        del inputs, labels

    def __len__(self) -> int:
        return self.rows

    def index_stream(self, size: int, seed: int, skip: int) -> ChunkedOrder:
        """The training batches' indices: contiguous chunks of rows, shuffled within a window."""
        return ChunkedOrder(self.rows, size, self.CHUNK_BYTES // max(1, self.row_bytes), seed, skip,
                            ahead=self.read_ahead)

    def read_ahead(self, ranges: list[tuple[int, int]]) -> None:
        """Ask the page cache for these rows of X (they are read while the steps before them run)."""
        if not hasattr(os, "posix_fadvise"):
            return
        with open(self.x_path, "rb") as file:
            for start, stop in ranges:
                os.posix_fadvise(file.fileno(), self.x_offset + start * self.row_bytes, (stop - start) * self.row_bytes,
                                 os.POSIX_FADV_WILLNEED)

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list:
        order = np.asarray(indices)
        x, y = (np.load(path, mmap_mode="r") for path in (self.x_path, self.y_path))
        rows, labels = np.array(x[order]), np.array(y[order])
        del x, y  # unmapped here
        return list(zip(rows, labels))


def npy_files(train: list[str], dev: list[str] | None = None, test: list[str] | None = None) -> dict:
    """A dataset factory (`source: "lsmn_core.data.streaming:npy_files"`): streamed splits from .npy
    files, each split given as [x.npy, y.npy]; missing dev and test splits are drawn from train."""
    return {split: ArrayFiles(*files) for split, files in (("train", train), ("dev", dev), ("test", test)) if files}
