"""Where a task's rows come from when they are not the user's files: a registered data set (by its
name, entry point group `lsmn.datasets`) or a factory (by its import path, `source:`).

Both keep one contract: a callable, called with the task's `args` (a data set also with its
`target` first), that returns the training rows (X, y), a torch Dataset of (x, y) rows (then the
task is streamed), or a dict of those under "train" and optionally "dev" and "test" (given splits
are used as given, missing ones drawn from the training rows); or a `LoadedTask`, which also says
what the rows are (kind, classes, modality, which splits are published) where arrays alone would
leave it to be guessed. A callable that declares a keyword parameter `domain` receives the task's
input domain and applies it itself (else the engine applies it to image inputs); one that declares
`data` receives the run's DataConfig (to split its rows its own way); `text`, whether the run reads
text through a tokenizer (a data set of tokens can then give their text instead of its own ids).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from torch.utils.data import Dataset
from typing_extensions import TypeIs

from lsmn_core.config import DataConfig, TaskConfig
from lsmn_core.data.splits import Arrays
from lsmn_core.data.streaming import checked_dataset, is_dataset
from lsmn_core.data.tasks import METRIC_OF_KIND, MODALITIES
from lsmn_core.data.text import is_text
from lsmn_core.data.user_files import SPLIT_ARRAYS, checked_split
from lsmn_core.errors import DataError
from lsmn_core.plugins import one_line

CONTEXT = ("domain", "data", "text")  # keyword parameters a source may declare to receive the task's context

Rows = dict[str, Arrays] | dict[str, Dataset]  # a plain source's splits: arrays, or Datasets to stream


def streamed(rows: Rows) -> TypeIs[dict[str, Dataset]]:
    """Whether a plain source's splits are Datasets (every split is, or _checked_rows refuses them)."""
    return is_dataset(rows["train"])


@dataclass
class LoadedTask:
    """A data set's rows for one target, described: its splits (always "train"; "dev" and "test" where
    it gives them), the task's kind, its number of outputs (classes, labelled 0 .. n - 1; 1 for a
    regression), the inputs' modality (image [N, H, W], vector [N, F], sequence [N, L] for a 1-D
    signal, tokens [N, L] of ids with 0 the padding), the splits that come with the data set as
    published (the others are drawn), what the run records about the rows beyond their data set,
    target and domain, and for token tasks the text of each id."""

    splits: dict[str, Arrays]
    kind: str
    n_outputs: int
    modality: str
    published: frozenset[str] = field(default_factory=frozenset)
    description: str = ""
    vocabulary: list[str] | None = None


def call_source(source: Callable, task: TaskConfig, data: DataConfig, name: str, with_target: bool,
                text: bool = False) -> LoadedTask | Rows:
    """Call a data set (`with_target`) or factory for `task` and check what it returns; every problem
    is one DataError line naming the task (`name`: what the config calls the source)."""
    if not callable(source):
        raise DataError(f"task {task.name}: {name!r} is not a function")
    parameters: Mapping[str, inspect.Parameter]
    try:
        parameters = inspect.signature(source).parameters
    except (TypeError, ValueError):  # a builtin without a signature takes no context
        parameters = {}
    taken = sorted(set(task.args) & set(CONTEXT) & set(parameters))
    if taken:
        raise DataError(f"task {task.name}: args may not set {taken[0]!r}: {name} receives the task's own")
    context = {"domain": task.domain, "data": data, "text": text}
    kwargs = {**task.args, **{key: context[key] for key in CONTEXT if key in parameters}}
    try:
        result = source(task.target, **kwargs) if with_target else source(**kwargs)
    except DataError as exc:
        raise DataError(f"task {task.name}: {exc}") from None
    except Exception as exc:  # a user's data set or factory may raise anything
        raise DataError(f"task {task.name}: {name}(**args) failed: {one_line(exc)}") from None
    if isinstance(result, LoadedTask):
        return _checked_loaded(result, task, name)
    return _checked_rows(result, task, name)


def applies_domain(source: Callable) -> bool:
    """Whether a source applies the task's input domain itself (it declares `domain`)."""
    try:
        return "domain" in inspect.signature(source).parameters
    except (TypeError, ValueError):
        return False


def _checked_rows(result, task: TaskConfig, name: str) -> Rows:
    """A plain result: (X, y), a Dataset, or a dict of those by split; arrays checked, Datasets wrapped."""
    if isinstance(result, tuple) and len(result) == 2 or is_dataset(result):
        result = {"train": result}
    if not (isinstance(result, dict) and "train" in result and set(result) <= set(SPLIT_ARRAYS)
            and all(isinstance(v, tuple) and len(v) == 2 or is_dataset(v) for v in result.values())):
        raise DataError(f"task {task.name}: {name} must return (X, y), a torch Dataset, a dict of those under "
                        f"'train' (and optionally 'dev', 'test'), or a LoadedTask; got {type(result).__name__}")
    if any(map(is_dataset, result.values())):
        if not all(map(is_dataset, result.values())):
            raise DataError(f"task {task.name}: {name} returned Datasets for some splits and arrays for others; "
                            "give every split the same way")
        return {split: checked_dataset(task.name, split, dataset) for split, dataset in result.items()}
    return {split: _arrays(task, x, y, f"{name} ({split})", split, task.tokens) for split, (x, y) in result.items()}


def _arrays(task: TaskConfig, x, y, where: str, split: str, tokens: bool) -> Arrays:
    try:
        if is_text(x) and len(y) and np.ndim(y[0]) == 1:  # tagged text: a list of labels per text, of its words
            labels = np.empty(len(y), dtype=object)
            for i, row in enumerate(y):
                labels[i] = np.asarray(row, dtype=np.int64)
            return checked_split(task.name, x, labels, where, split, tokens)
        x, y = (x if is_text(x) else np.asarray(x)), np.asarray(y)
    except (TypeError, ValueError) as exc:
        raise DataError(f"task {task.name}: {where} is not arrays ({exc})") from None
    return checked_split(task.name, x, y, where, split, tokens)


def _checked_loaded(loaded: LoadedTask, task: TaskConfig, name: str) -> LoadedTask:
    """A LoadedTask's description and arrays, checked: a known kind and modality, labels within its
    outputs, and every split's arrays as any split's are."""
    if loaded.kind not in METRIC_OF_KIND or loaded.modality not in MODALITIES:
        raise DataError(f"task {task.name}: {name} describes its rows as {str(loaded.kind)[:20]!r} "
                        f"{str(loaded.modality)[:20]!r} (kinds: {', '.join(METRIC_OF_KIND)}; modalities: "
                        f"{', '.join(MODALITIES)})")
    splits = loaded.splits
    if not (isinstance(splits, dict) and "train" in splits and set(splits) <= set(SPLIT_ARRAYS)):
        raise DataError(f"task {task.name}: {name} must give its rows under 'train' (and optionally 'dev', 'test')")
    tokens = loaded.modality == "tokens"
    checked = {split: _arrays(task, x, y, f"{name} ({split})", split, tokens) for split, (x, y) in splits.items()}
    if loaded.modality == "text" and loaded.kind == "tagging":  # labels per word: checked once tokenized
        loaded.splits = checked
        return loaded
    if loaded.kind != "regression":
        labels = np.concatenate([y[y >= 0] if loaded.kind == "tagging" else y for _, y in checked.values()])
        if not (isinstance(loaded.n_outputs, int) and loaded.n_outputs >= 1 and labels.min(initial=0) >= 0
                and labels.max(initial=0) < loaded.n_outputs):
            raise DataError(f"task {task.name}: {name}'s labels must be integers in 0 .. n_outputs - 1")
    loaded.splits = checked
    return loaded
