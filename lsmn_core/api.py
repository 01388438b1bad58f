"""The Python API: train on a researcher's own arrays from a script or notebook, and open the run.

    from lsmn_core import Task, train, open_run
    run = train({"name": "mine", "model": {"width": 64}, "scheme": {"kind": "sparse"}},
                tasks=[Task("a", train=(X, y), test=(X_test, y_test))], out="runs")
    run.summary()["metrics"], run.masks(), run.load_model(), run.evaluate(routing=edited_doc)

A run trained here is the same run directory as the CLI's. Each Task's arrays are kept as an .npz
(content-addressed) in the runs folder's `.data/`, and the run's config names that file, so the run
can be evaluated, fine-tuned and retrained from the app later, in another process. A Task given
torch Datasets is streamed (lsmn_core.data.streaming) and its Datasets stay in this process: to reopen
its run elsewhere, give the data by a factory instead (`source: "package.module:function"`).
"""

from __future__ import annotations

import hashlib
import io
import itertools
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Literal

import numpy as np
from torch.utils.data import Dataset

from lsmn_core.config import load_config, parse_config
from lsmn_core.errors import ConfigError, DataError
from lsmn_core.training.evaluation import evaluate_run
from lsmn_core.store.files import atomic_write
from lsmn_core.store.runs import DATA_CACHE, Run
from lsmn_core.data.streaming import is_dataset
from lsmn_core.training.trainer import train as train_config

Split = tuple  # (X, y): numpy arrays or torch tensors; or a torch Dataset of (x, y) rows
_HANDED: dict[str, dict] = {}  # Datasets handed to train() in this process, by key
_KEYS = itertools.count()


def handed_data(key: str) -> dict:
    """The factory behind a Task given Datasets: they live in the process that trained it."""
    if key not in _HANDED:
        raise DataError("this task's data was handed to lsmn_core.train as torch Datasets in another process; "
                        "to use its run here, give the data by a factory (source: package.module:function)")
    return _HANDED[key]


@dataclass
class Task:
    """One task from arrays or torch Datasets: its training rows, and optionally given dev and test
    splits (a missing split is drawn from the training rows). `kind` defaults to what the labels
    look like; the metric follows the kind (accuracy for classification, RMSE for regression).
    A streamed classification task needs `classes` (labels 0 .. classes - 1)."""

    name: str
    train: Split | Dataset
    dev: Split | Dataset | None = None
    test: Split | Dataset | None = None
    kind: Literal["classification", "regression"] | None = None
    metric: Literal["accuracy", "rmse"] | None = None
    standardise: bool = True  # vector features scaled by train statistics (array tasks)
    classes: int | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """The splits as the .npz arrays the loader reads (X, y, X_dev, y_dev, X_test, y_test)."""
        arrays = {}
        for split, prefix in (("train", ""), ("dev", "_dev"), ("test", "_test")):
            pair = getattr(self, split)
            if pair is None:
                continue
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise DataError(f"task {self.name}: {split} must be a pair (X, y) of arrays")
            for letter, value in zip("Xy", pair):
                value = value.detach().cpu().numpy() if hasattr(value, "detach") else value
                try:
                    arrays[f"{letter}{prefix}"] = np.asarray(value)
                except (TypeError, ValueError) as exc:
                    raise DataError(f"task {self.name}: {split} {letter} is not an array ({exc})") from None
                if arrays[f"{letter}{prefix}"].dtype == object:
                    raise DataError(f"task {self.name}: {split} {letter} must be numbers or strings, not objects")
        return arrays

    def config(self, folder: Path) -> dict:
        """Its config entry: the arrays saved under `folder` by their content's hash, or the Datasets
        kept in this process."""
        kind = {"accuracy": "classification", "rmse": "regression"}[self.metric] if self.metric else self.kind
        if self.metric and self.kind and kind != self.kind:
            raise ConfigError(f"task {self.name}: metric {self.metric} does not go with kind {self.kind}")
        splits = {"train": self.train, "dev": self.dev, "test": self.test}
        if any(map(is_dataset, splits.values())):
            key = f"{self.name}-{next(_KEYS)}"
            _HANDED[key] = {split: data for split, data in splits.items() if data is not None}
            return {"name": self.name, "source": f"{__name__}:handed_data", "args": {"key": key}, "kind": kind,
                    "classes": self.classes}
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **self.arrays())
        digest = hashlib.sha256(buffer.getvalue()).hexdigest()[:16]
        path = folder / f"{self.name}-{digest}.npz"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
        return {"name": self.name, "file": str(path.resolve()), "kind": kind, "standardise": self.standardise}


class TrainedRun(Run):
    """A run directory, as lsmn_core.store.runs.Run, that can also be evaluated under an edited routing."""

    def evaluate(self, routing=None, device: str = "auto") -> dict:
        """Dev and test metrics per task, and their change against the stored ones, under `routing`
        (a routing.json document, a (document, arrays) pair or a path; None: the stored routing)."""
        return evaluate_run(self, routing, device)


def open_run(path: str | Path) -> TrainedRun:
    return TrainedRun(Path(path))


def train(config: dict | str | Path, tasks: Sequence[Task] = (), out: str | Path = "runs", device: str | None = None,
          quiet: bool = True) -> TrainedRun | None:
    """Train `config` (a dict as the YAML would hold, or a YAML file) on its own tasks plus `tasks`;
    returns the run (None in the processes of a torchrun job that do not write it, rank > 0)."""
    data = dict(config) if isinstance(config, dict) else load_config(config).to_dict()
    data.setdefault("name", "run")
    if not all(isinstance(t, Task) for t in tasks):
        raise ConfigError("tasks: expected lsmn_core.Task objects")
    data["tasks"] = list(data.get("tasks") or []) + [t.config(Path(out) / DATA_CACHE) for t in tasks]
    path = train_config(parse_config(data), out, device=device, quiet=quiet)
    return open_run(path) if path is not None else None
