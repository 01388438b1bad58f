import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from lsmn_core.store import routing
from lsmn_core.errors import RunError
from lsmn_core.store.runs import list_runs, open_run, safe_name, write_json


def test_packbits_round_trip_any_width():
    rng = np.random.RandomState(0)
    for shape in [(3, 5), (2, 4, 13), (1, 8), (4, 2, 64)]:
        mask = rng.rand(*shape) < 0.3
        packed = routing.pack(mask)
        assert packed.dtype == np.uint8 and packed.shape[-1] == (shape[-1] + 7) // 8
        assert np.array_equal(routing.unpack(packed, list(shape)), mask)


RUN_FILES = ("run.json", "progress.json", "metrics.jsonl", "summary.json", "model.safetensors",
             "routing.json", "routing.safetensors")  # the run directory's contract


def test_a_finished_run_has_every_contract_file(sparse_run):
    for name in RUN_FILES:
        assert (sparse_run / name).is_file(), name
    meta = json.loads((sparse_run / "run.json").read_text())
    assert meta["status"] == "done" and meta["scheme"] == "sparse" and meta["parent"] is None
    assert {"torch", "numpy", "python", "lsmn"} <= set(meta["versions"]) and meta["device"] == "cpu"
    assert [t["name"] for t in meta["tasks"]] == ["digit", "parity", "position"]
    assert meta["tasks"][0]["metric"] == "accuracy" and meta["tasks"][0]["sizes"]["train"] > 0
    records = [json.loads(line) for line in (sparse_run / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "task", "split", "metric", "value"} <= set(records[-1])
    progress = json.loads((sparse_run / "progress.json").read_text())
    assert {"phase", "step", "total", "eta", "message"} <= set(progress)
    doc = json.loads((sparse_run / "routing.json").read_text())
    assert doc["tasks"] == ["digit", "parity", "position"]
    assert doc["mask_encoding"] == "packbits-last-axis"
    arrays = load_file(str(sparse_run / "routing.safetensors"))
    for name, entry in doc["masks"].items():
        assert entry["key"] == f"masks.{name}" and arrays[entry["key"]].dtype == np.uint8
    assert not list(sparse_run.glob(".*.tmp"))


def test_a_loaded_run_reproduces_the_stored_metrics(sparse_run):
    from lsmn_core.training.evaluation import evaluate_run

    run = open_run(sparse_run)
    result = evaluate_run(run, device="cpu")
    for task, m in run.summary()["metrics"].items():
        assert result["metrics"][task]["test"] == pytest.approx(m["test"], abs=1e-6)
        assert result["metrics"][task]["test_delta"] == pytest.approx(0, abs=1e-6)


def copy_run(sparse_run, tmp_path):
    target = tmp_path / sparse_run.name
    shutil.copytree(sparse_run, target)
    return target


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "model.safetensors").write_bytes(b"\x00" * 20), "model.safetensors is corrupt"),
    (lambda p: (p / "model.safetensors").unlink(), "has no model.safetensors"),
    (lambda p: (p / "routing.safetensors").write_bytes((p / "routing.safetensors").read_bytes()[:100]),
     "not a readable safetensors file"),
    (lambda p: (p / "routing.json").write_text("{"), "not valid JSON"),
])
def test_damaged_runs_give_one_clear_error(sparse_run, tmp_path, damage, message):
    path = copy_run(sparse_run, tmp_path)
    damage(path)
    with pytest.raises(RunError, match=message):
        open_run(path).load_model()


def test_weights_that_do_not_fit_the_config_are_refused(sparse_run, tmp_path):
    path = copy_run(sparse_run, tmp_path)
    meta = json.loads((path / "run.json").read_text())
    meta["config"]["model"]["width"] = 48
    write_json(path / "run.json", meta)
    with pytest.raises(RunError, match="does not fit the config"):
        open_run(path).load_model()


def test_list_runs_reports_unreadable_folders(sparse_run, tmp_path):
    good = copy_run(sparse_run, tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("[1, 2")
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "notes.txt").write_text("not a run")
    (tmp_path / "starting").mkdir()  # a run being created: nothing but its run.json's temp file yet
    (tmp_path / "starting" / ".run.json.x.tmp").write_text("{")
    runs, broken = list_runs(tmp_path)
    assert [r.path for r in runs] == [good]
    reasons = dict((p.name, why) for p, why in broken)
    assert "not valid JSON" in reasons["broken"] and "no run.json" in reasons["stray"]
    assert "starting" not in reasons


def test_runs_are_listed_newest_first_by_instant_whatever_zone_stamped_them(sparse_run, tmp_path):
    stamps = {"tokyo": "2026-12-03T09:00:00+09:00",  # midnight UTC: the earliest, though its text sorts last
              "utc": "2026-12-03T01:00:00+00:00", "new-york": "2026-12-02T21:00:00-05:00",  # 02:00 UTC
              "unreadable": "yesterday"}
    for name, stamp in stamps.items():
        path = shutil.copytree(sparse_run, tmp_path / name)
        meta = json.loads((path / "run.json").read_text())
        write_json(path / "run.json", {**meta, "created": stamp})
    runs = [r.id for r in list_runs(tmp_path)[0]]
    assert runs == ["new-york", "utc", "tokyo", "unreadable"]


def test_reading_tolerates_a_run_in_progress(sparse_run, tmp_path):
    path = copy_run(sparse_run, tmp_path)
    with open(path / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "task": "dig')  # a writer caught mid-line
    (path / "summary.json").unlink()
    run = open_run(path)
    assert run.metrics()[-1]["step"] != 99
    with pytest.raises(RunError, match="has no summary yet"):
        run.summary()


def test_safe_names_stay_inside_the_runs_folder():
    assert safe_name("../../etc/passwd") == "etc-passwd"
    assert safe_name("my run/1") == "my-run-1"
    assert safe_name("...") == "run"


def test_loaded_model_is_plain_tensors_only(sparse_run):
    model = open_run(sparse_run).load_model()
    assert all(isinstance(v, torch.Tensor) for v in model.state_dict().values())


def test_same_config_and_seed_give_identical_weights_on_cpu(tmp_path):
    from safetensors.torch import load_file as load_tensors

    from helpers import tiny_config
    from lsmn_core.training.trainer import train

    config = tiny_config(train={"steps": 30, "batch_size": 16, "eval_every": 10, "device": "cpu"},
                         scheme={"kind": "sparse", "prune_rate": 0.5, "min_density": 0.3, "round_steps": 10})
    first, second = train(config, tmp_path / "a", quiet=True), train(config, tmp_path / "b", quiet=True)
    a, b = load_tensors(str(first / "model.safetensors")), load_tensors(str(second / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (first / "routing.safetensors").read_bytes() == (second / "routing.safetensors").read_bytes()
