"""Streamed tasks: a factory or a Python Task gives torch Datasets, read in batches through a DataLoader;
the same seed gives the same run whatever the workers, a resumed stream continues where it stopped,
and bad Datasets get one line."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers import REPO
from lsmn.cli import main
from lsmn_core import Task, open_run, train
from lsmn_core.config import parse_config
from lsmn_core.errors import DataError
from lsmn_core.data.chunked_order import ChunkedOrder
from lsmn_core.data.streaming import ArrayFiles, LoaderOptions, StreamedSplit
from lsmn_core.training.trainer import train as train_config

TINY = {"model": {"width": 16, "depth": 1}, "scheme": {"kind": "sparse", "round_steps": 10, "warmup_steps": 5},
        "train": {"steps": 30, "batch_size": 32, "eval_every": 15, "device": "cpu"}}


@pytest.fixture
def factories_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tests"))
    monkeypatch.setenv("PYTHONPATH", str(REPO / "tests"))


def _config(tmp_path, source="toy_factory:streamed_blobs", args=None, workers=0, **task):
    path = tmp_path / f"c{workers}.yaml"
    path.write_text(json.dumps({"name": "streamed", "tasks": [
        {"name": "blobs", "source": source, "args": {"n": 150} if args is None else args, **task},
        {"name": "digit", "dataset": "digits", "target": "digit"}], **TINY, "data": {"workers": workers}}))
    return path


def test_a_factory_s_datasets_stream_and_workers_do_not_change_the_run(tmp_path, factories_on_path):
    weights = []
    for workers in (0, 2):
        assert main(["train", str(_config(tmp_path, workers=workers)), "--out", str(tmp_path / "runs"),
                     "--quiet"]) == 0
        (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("streamed") and
                      json.loads((p / "run.json").read_text())["config"]["data"]["workers"] == workers]
        run = open_run(run_dir)
        spec = run.specs[0]
        assert run.status == "done" and "(streamed)" in spec.source
        assert spec.sizes == {"train": 120, "dev": 30, "test": 30}
        assert spec.splits == {"train": "given", "dev": "drawn", "test": "given"}
        weights.append(load_file(run_dir / "model.safetensors"))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    # the given test split (30 rows, all of class 1, from another seed) is the one scored
    sys.path.insert(0, str(REPO / "tests"))
    from toy_factory import BlobRows

    rows = BlobRows(30, 1, label=1)
    with torch.no_grad():
        predicted = run.load_model()(torch.as_tensor(rows.x), "blobs").argmax(-1).numpy()
    assert run.summary()["metrics"]["blobs"]["test"] == pytest.approx((predicted == 1).mean(), abs=1e-6)
    assert main(["eval", str(run_dir), "--json"]) == 0  # another reader calls the factory again


def test_a_resumed_stream_continues_where_it_stopped():
    rows = torch.utils.data.TensorDataset(torch.arange(40.0)[:, None], torch.arange(40) % 3)
    def split():
        return StreamedSplit(rows, "t", torch.device("cpu"), LoaderOptions(), 7, {"input_shape": [1], "classes": 3})

    whole = split()
    batches = [whole.batch(8)[0] for _ in range(5)]
    resumed = split()
    resumed.seek(3)
    assert torch.equal(resumed.batch(8)[0], batches[3]) and resumed.drawn == 4
    in_order = torch.cat([x for x, _ in split().in_order(16)])
    assert torch.equal(in_order[:, 0], torch.arange(40.0))


def test_npy_files_stream_from_disk(tmp_path):
    rng = np.random.RandomState(0)
    y = rng.randint(0, 3, 300)
    np.save(tmp_path / "x.npy", (rng.randn(300, 8) + 3 * y[:, None]).astype(np.float32))
    np.save(tmp_path / "y.npy", y)
    rows = ArrayFiles(tmp_path / "x.npy", tmp_path / "y.npy")
    assert len(rows) == 300 and rows[5][1] == y[5]
    files = {"train": [str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]}
    config = parse_config({"name": "npy", "tasks": [{"name": "files", "source": "lsmn_core.data.streaming:npy_files",
                                                     "args": files, "classes": 3}], **TINY, "scheme": {"kind": "hard"},
                           "train": {**TINY["train"], "steps": 200}})
    run = open_run(train_config(config, tmp_path / "runs", quiet=True))
    assert run.specs[0].sizes == {"train": 180, "dev": 60, "test": 60}
    assert run.summary()["metrics"]["files"]["test"] > 0.7  # three classes far apart (chance: 1/3)


def test_a_python_task_of_datasets_streams_and_its_run_says_how_to_reopen_it(tmp_path, factories_on_path):
    from toy_factory import BlobRows

    run = train({"name": "api", **TINY}, tasks=[Task("blobs", train=BlobRows(120, 0), test=BlobRows(20, 1, label=1),
                                                     classes=2)], out=tmp_path)
    assert run.status == "done" and run.specs[0].sizes["test"] == 20
    assert run.evaluate(device="cpu")["metrics"]["blobs"]["test_delta"] == pytest.approx(0, abs=1e-6)
    result = subprocess.run([sys.executable, "-m", "lsmn", "eval", str(run.path)], capture_output=True, text=True,
                            cwd=REPO, check=False)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "give the data by a factory" in result.stderr


@pytest.mark.parametrize("source, task, message", [
    ("toy_factory:broken_rows", {"classes": 2},
     "reading a batch of its dataset failed: KeyError: 'row \\d+ is missing'"),
    ("toy_factory:mixed", {}, "Datasets for some splits and arrays for others"),
    ("toy_factory:plain_rows", {"kind": "classification"}, "needs its number of classes"),
    ("toy_factory:streamed_blobs", {"classes": 1}, "a label outside 0 .. 0"),
    ("toy_factory:iterable_rows", {}, "IterableDataset"),
])
@pytest.mark.parametrize("workers", [0, 2])
def test_bad_streamed_data_gets_one_line_and_exit_2(tmp_path, factories_on_path, capsys, source, task, message,
                                                     workers):
    code = main(["train", str(_config(tmp_path, source, {}, workers, **task)), "--out", str(tmp_path / "runs"),
                 "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and re.search(message, err), err
    for run_dir in (tmp_path / "runs").glob("*") if (tmp_path / "runs").exists() else []:
        assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"  # nothing looks finished


def test_a_dataset_whose_rows_change_shape_is_refused_by_name():
    rows = [(np.zeros(3), 0)] * 5 + [(np.zeros(4), 0)] * 5
    split = StreamedSplit(rows, "t", torch.device("cpu"), LoaderOptions(), 0, {"input_shape": [3], "classes": 2})
    with pytest.raises(DataError, match="task t: the dataset's items must be"):
        list(split.in_order(10))


def test_a_stopped_streamed_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, factories_on_path,
                                                                               monkeypatch):
    import toy_factory

    config = parse_config({"name": "resumed", "tasks": [
        {"name": "blobs", "source": "toy_factory:interrupting_blobs", "classes": 2},
        {"name": "digit", "dataset": "digits", "target": "digit"}], **TINY, "scheme": {"kind": "hard"},
        "train": {**TINY["train"], "steps": 60, "patience": 0, "sampling": "round_robin"}})
    reference = open_run(train_config(config, tmp_path / "whole", quiet=True))
    toy_factory.Interrupting.reads = 0
    monkeypatch.setenv("LSMN_TEST_STOP_AFTER", "650")  # rows: after the checkpoint of step 30, before 45
    with pytest.raises(KeyboardInterrupt):
        train_config(config, tmp_path / "stopped", quiet=True)
    (run_dir,) = (tmp_path / "stopped").iterdir()
    assert open_run(run_dir).status == "interrupted" and (run_dir / "checkpoint.safetensors").is_file()
    monkeypatch.delenv("LSMN_TEST_STOP_AFTER")
    from lsmn_core.training.trainer import resume

    resume(run_dir, quiet=True)
    expected, got = load_file(reference.path / "model.safetensors"), load_file(run_dir / "model.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_curves_go_to_tensorboard_per_phase_task_and_split(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"name": "board", "tasks": [{"name": "digit", "dataset": "digits", "target": "digit"},
                                                             {"name": "parity", "dataset": "digits",
                                                              "target": "parity"}], **TINY}))
    assert main(["train", str(config), "--out", str(tmp_path / "runs"), "--quiet", "--tensorboard",
                 str(tmp_path / "board")]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    events = EventAccumulator(str(tmp_path / "board" / run_dir.name))
    events.Reload()
    logged = {(f"{r['phase']}/{r['task']}/{r['split']}/accuracy", r["step"]): r["value"]
              for r in open_run(run_dir).metrics()}
    phases = {tag.split("/")[0] for tag in events.Tags()["scalars"]}
    assert {"warm-up", "train"} <= phases and "train/parity/dev/loss" in events.Tags()["scalars"]
    board = {(tag, e.step): e.value for tag in events.Tags()["scalars"] if tag.endswith("accuracy")
             for e in events.Scalars(tag)}
    assert board.keys() == logged.keys()
    assert all(board[k] == pytest.approx(v, abs=1e-6) for k, v in logged.items())


def test_a_file_trains_in_shuffled_chunks_every_row_once_a_pass():
    """ChunkedOrder: 100 rows in chunks of 10, 3 chunks a window, batches of 8. A pass draws each row
    once; a batch's rows come from the window being read and the rows the one before left over;
    each window is announced before its first batch; the same seed gives the same batches, and a
    resumed stream (skip) continues them, announcing only what is still to come."""
    told: list[list[tuple[int, int]]] = []
    stream = iter(ChunkedOrder(100, 8, chunk_rows=10, seed=3, window=3, ahead=told.append))
    batches = [next(stream) for _ in range(24)]
    first_pass = [i for batch in batches[:12] for i in batch]
    assert len(set(first_pass)) == 96 and all(0 <= i < 100 for i in first_pass)
    assert all(batch == sorted(batch) and len(batch) == 8 for batch in batches)
    assert all(len({i // 10 for i in batch}) <= 6 for batch in batches)  # two windows' chunks at most
    assert len(told[0]) == 6 and all(b - a == 10 for a, b in told[0])  # the first window and the next
    announced = {i for ranges in told[:1] for a, b in ranges for i in range(a, b)}
    assert set(i for batch in batches[:3] for i in batch) <= announced
    assert [next(iter(ChunkedOrder(100, 8, 10, seed=3, window=3))) for _ in range(1)] == batches[:1]
    resumed_told: list = []
    resumed = iter(ChunkedOrder(100, 8, 10, seed=3, skip=5, window=3, ahead=resumed_told.append))
    assert [next(resumed) for _ in range(19)] == batches[5:]
    assert resumed_told[0] == told[1] + told[2]  # the two windows after the one it resumes inside


def test_npy_files_train_in_chunks_read_ahead(tmp_path):
    x = np.arange(2000 * 4, dtype=np.float32).reshape(2000, 4)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(2000) % 3)
    rows = ArrayFiles(tmp_path / "x.npy", tmp_path / "y.npy")
    rows.CHUNK_BYTES = 16 * 100  # 100 rows of 4 float32 a chunk
    split = StreamedSplit(rows, "t", torch.device("cpu"), LoaderOptions(), 7, {"input_shape": [4], "classes": 3})
    expected = next(iter(rows.index_stream(32, 7, 0)))
    got, labels = split.batch(32)
    assert torch.equal(got, torch.as_tensor(x[expected])) and torch.equal(labels, torch.as_tensor(expected) % 3)
    assert len({i // 100 for i in expected}) <= 8  # from the first window's chunks
    rows.read_ahead([(0, 100), (1900, 2000)])  # the page cache asked for them; nothing read here
