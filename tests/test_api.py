"""The Python API and dataset factories: a researcher's arrays or functions, given splits kept, the
same run directory as the CLI's."""

import json
import re
import runpy
import sys

import numpy as np
import pytest
import torch

from helpers import REPO
from lsmn.cli import main
from lsmn_core import Task, open_run, train
from lsmn_core.config import parse_config
from lsmn_core.errors import ConfigError, DataError
from lsmn_core.training.trainer import train as train_config

TINY = {"model": {"width": 16, "depth": 1}, "scheme": {"kind": "hard"},
        "train": {"steps": 30, "batch_size": 32, "eval_every": 15, "device": "cpu"}}


def test_the_example_trains_opens_the_run_and_evaluates_an_edited_routing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["python_api.py", str(tmp_path)])
    runpy.run_path(str(REPO / "examples" / "python_api.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "under the edit, is_two" in out and "change" in out
    (run_dir,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    run = open_run(run_dir)
    assert run.status == "done" and run.specs[0].sizes["test"] == 200
    assert run.specs[0].splits == {"train": "given", "dev": "drawn", "test": "given"}
    # the stored test metric is the one on the given rows (the example's last 200)
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=700, n_features=16, n_informative=6, n_classes=3, random_state=0)
    train_rows = X[:500]
    x_test = (X[500:] - train_rows.mean(0)) / (train_rows.std(0) + 1e-6)  # standardised by train statistics
    with torch.no_grad():
        predicted = run.load_model()(torch.tensor(x_test, dtype=torch.float32), "classes").argmax(-1).numpy()
    assert run.summary()["metrics"]["classes"]["test"] == pytest.approx((predicted == y[500:]).mean(), abs=1e-6)
    assert main(["eval", str(run_dir), "--json"]) == 0  # another reader finds the arrays in .data/


def test_tasks_from_python_and_a_config_s_own_train_together(tmp_path):
    rng = np.random.RandomState(0)
    x, y = rng.randn(80, 5), rng.randn(80)
    run = train({"name": "mixed", "tasks": [{"name": "digit", "dataset": "digits", "target": "digit"}], **TINY},
                tasks=[Task("reg", train=(torch.tensor(x), torch.tensor(y)), metric="rmse")], out=tmp_path)
    assert run.task_names == ["digit", "reg"] and run.summary()["metrics"]["reg"]["metric"] == "rmse"
    assert run.evaluate(device="cpu")["metrics"]["reg"]["test_delta"] == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("task, message", [
    (Task("a", train=(np.zeros((10, 3)), np.zeros(7))), "X and y must have the same length"),
    (Task("a", train=np.zeros((10, 3))), "must be a pair"),
    (Task("a", train=(np.zeros((10, 3)), np.zeros(10)), metric="rmse", kind="classification"), "does not go with"),
    (Task("a", train=(np.zeros((10, 3)), np.zeros(10)), test=(np.zeros((4, 5)), np.zeros(4))),
     "different feature shapes"),
])
def test_bad_python_tasks_get_one_line(tmp_path, task, message):
    with pytest.raises((DataError, ConfigError), match=message):
        train({"name": "bad", **TINY}, tasks=[task], out=tmp_path)
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]  # no run folder


@pytest.fixture
def factories_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tests"))


def test_a_dataset_factory_is_called_by_name_and_its_test_split_kept(tmp_path, factories_on_path):
    config = parse_config({"name": "factory", "tasks": [
        {"name": "blobs", "source": "toy_factory:blobs", "args": {"n": 150, "seed": 3}}], **TINY})
    run = open_run(train_config(config, tmp_path, quiet=True))
    task = json.loads((run.path / "run.json").read_text())["config"]["tasks"][0]
    assert task["source"] == "toy_factory:blobs" and task["args"] == {"n": 150, "seed": 3}
    assert run.specs[0].sizes["test"] == 30 and run.specs[0].splits["test"] == "given"
    assert run.summary()["metrics"]["blobs"]["test"] > 0.8


@pytest.mark.parametrize("source, args, message", [
    ("nowhere:blobs", {}, "source: cannot import 'nowhere:blobs'"),
    ("toy_factory:missing", {}, "source: cannot import 'toy_factory:missing'"),
    ("toy_factory:not_arrays", {}, "must return \\(X, y\\), a torch Dataset, a dict"),
    ("toy_factory:ragged", {}, "X and y must have the same length"),
    ("toy_factory:blobs", {"colour": 1}, "unexpected keyword argument 'colour'"),
])
def test_bad_factories_get_one_line_and_exit_2(tmp_path, factories_on_path, capsys, source, args, message):
    (tmp_path / "c.yaml").write_text(json.dumps({"name": "bad", "tasks": [{"name": "t", "source": source,
                                                                          "args": args}], **TINY}))
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "runs").exists()
