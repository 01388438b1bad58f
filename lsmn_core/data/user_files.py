"""A task's rows from the user's files: `.npz` (X, y, and optionally X_dev, y_dev, X_test, y_test)
or `.csv` (a target column, numeric features), with given dev and test splits used as given; and
the checks every split of arrays passes, wherever it comes from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lsmn_core.config import TaskConfig
from lsmn_core.data.tasks import PAD
from lsmn_core.data.text import is_text
from lsmn_core.errors import DataError

SPLIT_ARRAYS = {"train": ("X", "y"), "dev": ("X_dev", "y_dev"), "test": ("X_test", "y_test")}


def read_user_file(task: TaskConfig, file: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The splits a task's files give (`file`, its training file): always train; dev and test where
    the .npz holds X_dev, y_dev or X_test, y_test, or the task names a dev_file or test_file (.csv or .npz)."""
    given = read_split_file(task, Path(file), allow_splits=True)
    for split, other in (("dev", task.dev_file), ("test", task.test_file)):
        if other is not None:
            if split in given:
                raise DataError(f"task {task.name}: the {split} split is given twice ({Path(file).name} "
                                f"holds it and {split}_file names {Path(other).name})")
            given[split] = read_split_file(task, Path(other), allow_splits=False)["train"]
    features = {x.shape[1:] for x, _ in given.values()}
    if len(features) > 1:
        raise DataError(f"task {task.name}: the splits' X have different feature shapes {sorted(features)}")
    return given


def checked_split(task: str, x: np.ndarray, y: np.ndarray, where: str, split: str, tokens: bool):
    """One split's X and y of task `task`, checked: equal lengths, numeric X of 2 or 3 dimensions,
    finite (`tokens`: ids, integers >= 0, at least one real token per sequence; y per sequence or
    per token), or text (strings, or lists of words with a label each). X comes back as float32
    (ids as int64, text as an object array), copied only when it is not already."""
    if len(x) != len(y) or len(x) < (5 if split == "train" else 1):
        raise DataError(f"task {task}: {where}: X and y must have the same length"
                        + (" of at least 5 samples" if split == "train" else ""))
    if is_text(x):
        texts = np.empty(len(x), dtype=object)
        for i, text in enumerate(x):  # one by one: lists of words of one length must not become a 2-D array
            texts[i] = str(text) if isinstance(text, str) else [str(w) for w in text]
        if not all(len(t) for t in texts):
            raise DataError(f"task {task}: {where}: every text needs at least one character or word")
        if not isinstance(texts[0], str) and any(len(words) != len(labels) for words, labels in zip(texts, y)):
            raise DataError(f"task {task}: {where}: a tagged text needs one label per word")
        return texts, y
    if tokens:
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer) or (x < 0).any():
            raise DataError(f"task {task}: {where}: token ids must be integers >= 0 of shape [N, length] "
                            f"(0 the padding)")
        if not (x != PAD).any(1).all():
            raise DataError(f"task {task}: {where}: every sequence needs at least one token that is not padding")
        if y.ndim == 2 and y.shape != x.shape:
            raise DataError(f"task {task}: {where}: per-token targets must have X's shape {list(x.shape)}")
        return x.astype(np.int64, copy=False), y
    if x.ndim not in (2, 3) or not np.issubdtype(x.dtype, np.number):
        raise DataError(f"task {task}: {where}: X must be numeric with shape [N, features] or [N, H, W]")
    if not np.all(np.isfinite(x)):
        raise DataError(f"task {task}: {where}: X contains NaN or infinite values")
    return x.astype(np.float32, copy=False), y


def read_split_file(task: TaskConfig, path: Path, allow_splits: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if not path.is_file():
        raise DataError(f"task {task.name}: data file not found: {path}")
    if path.suffix == ".npz":
        names = SPLIT_ARRAYS if allow_splits else {"train": SPLIT_ARRAYS["train"]}
        try:
            with np.load(path, allow_pickle=False) as archive:
                known = [a for pair in names.values() for a in pair]
                unknown = sorted(set(archive.files) - set(known))
                if unknown:
                    raise DataError(f"task {task.name}: {path.name} holds arrays this loader does not know: "
                                    f"{', '.join(unknown)[:200]} (known: {', '.join(known)})")
                given = {}
                for split, (x_name, y_name) in names.items():
                    if (x_name in archive) != (y_name in archive):
                        raise DataError(f"task {task.name}: {path.name} holds one of {x_name} and {y_name} "
                                        "without the other")
                    if x_name in archive:
                        given[split] = (archive[x_name], archive[y_name])
                if "train" not in given:
                    raise DataError(f"task {task.name}: {path} must hold arrays 'X' and 'y'")
        except (ValueError, OSError) as exc:
            raise DataError(f"task {task.name}: cannot read {path}: {exc}") from None
    elif path.suffix == ".csv":
        import pandas as pd

        try:
            frame = pd.read_csv(path)
        except Exception as exc:  # pandas raises many parser error types
            raise DataError(f"task {task.name}: cannot read {path}: {exc}") from None
        for column in (task.target, task.text):
            if column is not None and column not in frame.columns:
                raise DataError(f"task {task.name}: column '{column}' not in {path.name} "
                                f"(columns: {', '.join(map(str, frame.columns))})")
        if task.text is not None:  # a text column, read through the checkpoint's tokenizer; other columns unused
            given = {"train": (frame[task.text].fillna("").astype(str).to_numpy(dtype=object),
                               frame[task.target].to_numpy())}
            return {"train": checked_split(task.name, *given["train"], f"{path.name} (train)", "train", False)}
        features = frame.drop(columns=[task.target])
        non_numeric = [c for c in features.columns if not np.issubdtype(features[c].dtype, np.number)]
        if non_numeric:
            raise DataError(f"task {task.name}: feature column '{non_numeric[0]}' is not numeric")
        given = {"train": (features.to_numpy(), frame[task.target].to_numpy())}
    else:
        raise DataError(f"task {task.name}: data files must be .npz or .csv, got {path.name}")
    return {split: checked_split(task.name, x, y, f"{path.name} ({split})", split, task.tokens)
            for split, (x, y) in given.items()}
