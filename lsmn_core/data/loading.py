"""Loading a task's splits, whatever they come from (a registered data set, the user's files, a
factory, a stream), into arrays and a TaskSpec, with fixed, seeded train/dev/test splits. Nothing
here knows a data set by its name: a data set says what its rows are (lsmn_core.data.sources)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, Subset

from lsmn_core.config import DataConfig, TaskConfig
from lsmn_core.data.domains import ORIGINAL, apply_domain
from lsmn_core.data.sources import LoadedTask, Rows, applies_domain, call_source, streamed
from lsmn_core.data.splits import Arrays, assemble_splits, assemble_streams
from lsmn_core.data.streaming import is_dataset, length
from lsmn_core.data.tasks import IGNORE, PAD, TaskSpec
from lsmn_core.data.text import Tokenization, is_text
from lsmn_core.data.user_files import read_user_file
from lsmn_core.datasets import DATASETS
from lsmn_core.errors import DataError
from lsmn_core.plugins import load_named


@dataclass
class TaskData:
    spec: TaskSpec
    splits: Mapping[str, Arrays | Dataset]  # split -> (X float32, y int64 | float32), or a Dataset of (x, y)
    # rows for a streamed task (lsmn_core.data.streaming)
    vocabulary: list[str] | None = None  # token tasks: the text of each id, where the data set knows it

    @property
    def streamed(self) -> bool:
        return is_dataset(self.splits["train"])

    def rows(self, split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The first `count` inputs and targets of a split, as arrays (a streamed task reads only those)."""
        data = self.splits[split]
        if not is_dataset(data):
            return data[0][:count], data[1][:count]
        items = [data[i] for i in range(min(count, length(data)))]
        return (np.stack([np.asarray(x, dtype=np.float32) for x, _ in items]),
                np.asarray([np.asarray(y) for _, y in items]))


@dataclass
class Described:
    """A task's splits with what the model needs to know of them: kind, outputs, modality, and per
    split whether it came as given ("given") or was drawn from the training rows ("drawn")."""

    splits: dict[str, Arrays]
    kind: str
    n_outputs: int
    modality: str
    origin: dict[str, str]


def load_task(task: TaskConfig, data: DataConfig, text: Tokenization | None = None) -> TaskData:
    """Load one task's splits and describe it; raises DataError with a fix when data is missing.
    Text goes through `text`, the run's tokenizer (that of its checkpoint, or data.tokenizer's)."""
    vocabulary = None
    rows: LoadedTask | Rows
    if task.file is not None:
        rows, in_domain = read_user_file(task, task.file), False
        source = f"file {Path(task.file).name}, target {task.target or 'y'}"
    else:
        if task.source is not None:
            name, loader, source = task.source, load_named(task.source, f"task {task.name}: source", DataError), \
                f"factory {task.source}"
        elif task.dataset is not None:
            name, loader = task.dataset, DATASETS.get(task.dataset, f"task {task.name}")
            source = f"{task.dataset}, target {task.target}, domain {task.domain}"
        else:
            raise DataError(f"task {task.name}: give one of 'dataset', 'file' or 'source'")
        rows = call_source(loader, task, data, name, with_target=task.source is None, text=text is not None)
        in_domain = applies_domain(loader)
    if isinstance(rows, LoadedTask):
        described = _as_loaded(rows, data)
        source += f", {rows.description}" if rows.description else ""
        vocabulary = rows.vocabulary
    elif streamed(rows):
        return _streamed_task(task, rows, data)
    else:
        described = _inferred(task, rows, data)
    splits = described.splits if in_domain else _in_domain(task, described.splits, described.modality)
    if task.limit:
        x, y = splits["train"]
        splits["train"] = x[: task.limit], y[: task.limit]
    vocab = int(max(x.max() for x, _ in splits.values())) + 1 if described.modality == "tokens" else 0
    pad = PAD
    if described.modality == "text":
        if text is None:
            raise DataError(f"task {task.name}: its inputs are text: give the run a tokenizer, a checkpoint's "
                            "(model.pretrained) or a folder's (data.tokenizer)")
        splits, vocab, pad = _tokenized(splits, described.kind, text), text.vocab, text.pad
        vocabulary = text.tokens
    spec = TaskSpec(
        name=task.name, kind=described.kind, n_outputs=described.n_outputs, modality=described.modality,
        input_shape=list(splits["train"][0].shape[1:]), sizes={k: len(v[1]) for k, v in splits.items()},
        source=source, splits=described.origin, vocab=vocab, pad=pad,
    )
    return TaskData(spec, splits, vocabulary)


def _tokenized(splits: dict[str, Arrays], kind: str, text: Tokenization) -> dict[str, Arrays]:
    """Text splits as token ids of one length (the longest of any split, at most data.max_length),
    a tagging task's word labels moved to their first sub-words."""
    encoded = {k: text.encode(x, y if kind == "tagging" else None) for k, (x, y) in splits.items()}
    length = max(ids.shape[1] for ids, _ in encoded.values())
    padded = {}
    for k, (ids, labels) in encoded.items():
        y = _pad(labels, length, IGNORE) if kind == "tagging" and labels is not None else splits[k][1]
        padded[k] = (_pad(ids, length, text.pad), y)
    return padded


def _pad(rows: np.ndarray, length: int, value: int) -> np.ndarray:
    return np.pad(rows, ((0, 0), (0, length - rows.shape[1])), constant_values=value)


def _as_loaded(loaded: LoadedTask, data: DataConfig) -> Described:
    """A data set's described rows: its splits as given, the ones it lacks drawn."""
    targets = np.float32 if loaded.kind == "regression" else np.int64
    words = loaded.modality == "text" and loaded.kind == "tagging"  # labels per word, tokenized later
    given = {k: (x, y if words else y.astype(targets, copy=False)) for k, (x, y) in loaded.splits.items()}
    origin = {split: "given" if split in loaded.published else "drawn" for split in ("train", "dev", "test")}
    return Described(assemble_splits(given, data), loaded.kind, loaded.n_outputs, loaded.modality, origin)


def _inferred(task: TaskConfig, given: dict[str, Arrays], data: DataConfig) -> Described:
    """Arrays of a user's file or factory, described by inference: classes encoded 0 .. C-1 over every
    split (per token for tagging), regression targets as floats, vector features standardised by the
    training split's statistics (`standardise`)."""
    tagging = task.tokens and given["train"][1].ndim == 2
    labels = np.concatenate([y[x != PAD] if tagging else y for x, y in given.values()])
    kind = _infer_kind(labels, task.kind)
    if tagging:  # labels of real tokens encoded 0..C-1, padding ignored
        if kind != "classification":
            raise DataError(f"task {task.name}: per-token targets must be classes")
        classes = np.unique(labels)
        given = {k: (x, np.where(x == PAD, IGNORE, np.searchsorted(classes, y)).astype(np.int64))
                 for k, (x, y) in given.items()}
        n_out, kind = len(classes), "tagging"
    elif kind == "classification":  # one encoding of the labels of every split
        classes, codes = np.unique(labels, return_inverse=True)
        bounds = np.cumsum([0] + [len(y) for _, y in given.values()])
        given = {k: (x, codes[lo:hi].astype(np.int64)) for (k, (x, _)), lo, hi in
                 zip(given.items(), bounds, bounds[1:])}
        n_out = len(classes)
    else:
        given, n_out = {k: (x, y.astype(np.float32)) for k, (x, y) in given.items()}, 1
    origin = {split: "given" if split in given else "drawn" for split in ("train", "dev", "test")}
    splits = assemble_splits(given, data)
    x = splits["train"][0]
    if x.ndim == 2 and task.standardise and not task.tokens:
        splits = _standardise_vectors(splits)
    modality = "text" if is_text(x) else "tokens" if task.tokens else "vector" if x.ndim == 2 else "image"
    return Described(splits, kind, n_out, modality, origin)


def _in_domain(task: TaskConfig, splits: dict, modality: str) -> dict:
    """The splits in the task's input domain (images only); the original domain is the rows as they are."""
    if task.domain == ORIGINAL:
        return splits
    if modality != "image":
        raise DataError(f"task {task.name}: input domains apply to images; its inputs are {modality}, so its domain "
                        f"must be '{ORIGINAL}', not '{str(task.domain)[:40]}'")
    try:
        return {k: (apply_domain(x, task.domain), y) for k, (x, y) in splits.items()}
    except DataError as exc:
        raise DataError(f"task {task.name}: {exc}") from None


def _infer_kind(y: np.ndarray, declared: str | None) -> str:
    if declared:
        return declared
    integral = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_) or y.dtype.kind in "OU"
    return "classification" if integral or len(np.unique(y)) <= 20 and np.all(y == np.round(y)) else "regression"


def _standardise_vectors(splits: dict) -> dict:
    """Scale vector features by train statistics, so user tabular data trains without tuning."""
    x_train = splits["train"][0]
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    return {k: (((x - mean) / std).astype(np.float32), y) for k, (x, y) in splits.items()}


def _streamed_task(task: TaskConfig, given: dict[str, Dataset], data: DataConfig) -> TaskData:
    """A task whose splits are Datasets: described from its first rows and the config, read in
    batches while it trains. Its rows are used as the Dataset gives them (not standardised)."""
    if task.tokens:
        raise DataError(f"task {task.name}: token tasks are read from arrays; streaming reads image and vector rows")
    if task.domain != ORIGINAL:
        raise DataError(f"task {task.name}: a streamed task's rows are read as given; input domains apply to arrays")
    try:
        first = {split: dataset[0] for split, dataset in given.items()}
        shapes = {split: list(np.shape(row[0])) for split, row in first.items()}
        label = np.asarray(first["train"][1])
    except Exception as exc:  # the user's Dataset may raise anything
        raise DataError(f"task {task.name}: the dataset's first row must be an (x, y) pair of arrays "
                        f"({type(exc).__name__}: {str(exc)[:200]})") from None
    if len({tuple(s) for s in shapes.values()}) > 1:
        raise DataError(f"task {task.name}: the splits' rows have different shapes {shapes}")
    shape = shapes["train"]
    if len(shape) not in (1, 2) or label.ndim != 0:
        raise DataError(f"task {task.name}: a streamed row must be x of shape [features] or [H, W] and a scalar y, "
                        f"got x {shape} and y {list(label.shape)}")
    kind = task.kind or ("classification" if np.issubdtype(label.dtype, np.integer) else "regression")
    classes = 0
    if kind == "classification":
        classes = task.classes or len(getattr(given["train"], "classes", ()))
        if not classes:
            raise DataError(f"task {task.name}: a streamed classification task needs its number of classes: "
                            "set `classes: N` (labels 0 .. N-1) or give the Dataset a `classes` list")
    splits = assemble_streams(given, data)
    if task.limit:
        splits["train"] = Subset(splits["train"], range(min(task.limit, length(splits["train"]))))
    spec = TaskSpec(
        name=task.name, kind=kind, n_outputs=classes or 1, modality="vector" if len(shape) == 1 else "image",
        input_shape=shape, sizes={k: length(v) for k, v in splits.items()},
        source=f"factory {task.source} (streamed)",
        splits={split: "given" if split in given else "drawn" for split in ("train", "dev", "test")},
    )
    return TaskData(spec, splits)


def load_tasks(tasks: list[TaskConfig], data: DataConfig, text: Tokenization | None = None) -> list[TaskData]:
    return [load_task(t, data, text) for t in tasks]


def check_data_fits(trained: list[TaskSpec], data: list[TaskData]) -> None:
    """The data loaded again for a stored run (to evaluate or fine-tune it) against what its model was
    built for: the same inputs, classes and token ids, or one line saying what changed. A token task
    keeps the vocabulary it was trained with."""
    for spec, task in zip(trained, data):
        now = task.spec
        if now.input_shape != spec.input_shape or now.modality != spec.modality:
            raise DataError(f"task {spec.name}: its data now has {now.modality} inputs of shape {now.input_shape}, "
                            f"the run's model reads {spec.modality} {spec.input_shape}")
        if (now.kind, now.n_outputs) != (spec.kind, spec.n_outputs):
            raise DataError(f"task {spec.name}: its data is now {now.kind} with {now.n_outputs} outputs, the run's "
                            f"model was trained for {spec.kind} with {spec.n_outputs}")
        if now.vocab > spec.vocab:
            raise DataError(f"task {spec.name}: its data now holds token id {now.vocab - 1}, out of the range the "
                            f"run's model knows (0 .. {spec.vocab - 1})")
        now.vocab = spec.vocab
