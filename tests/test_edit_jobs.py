"""Routing edits and background retraining, as the app's Edit page uses them."""

import time

import numpy as np
import pytest

from helpers import tiny_config
from lsmn_core import jobs
from lsmn_core.store import routing
from lsmn_core.errors import RoutingError
from lsmn_core.store.runs import list_runs, open_run
from lsmn_core.training.trainer import train


def test_mask_actions(sparse_run):
    run = open_run(sparse_run)
    doc, arrays = run.routing()
    before = run.masks()
    edited = routing.edit_masks(doc, arrays, {("digit", 0): "clear", ("parity", 1): "reset",
                                              ("position", 0): "copy:digit", ("digit", 1): "keep"})
    after = {n: routing.unpack(edited[e["key"]], e["shape"]) for n, e in doc["masks"].items()}
    for name in after:
        layer = int(name.split("blocks.")[1].split(".")[0])
        if layer == 0:
            assert not after[name][0].any()  # digit cleared
            assert np.array_equal(after[name][2], before[name][0])  # position got digit's original mask
            assert np.array_equal(after[name][1], before[name][1])
        else:
            assert after[name][1].all()  # parity reset
            assert np.array_equal(after[name][0], before[name][0])  # keep
    with pytest.raises(RoutingError, match="is not keep, reset, clear or copy"):
        routing.edit_masks(doc, arrays, {("digit", 0): "copy:nobody"})


def test_retrain_job_runs_in_its_own_process_and_links_the_new_run(tmp_path):
    config = tiny_config(scheme={"kind": "moe", "experts": 3, "top_k": 1},
                         train={"steps": 20, "batch_size": 16, "eval_every": 10, "device": "cpu"})
    parent = open_run(train(config, tmp_path, quiet=True))
    doc, arrays = parent.routing()
    doc["allowed"]["digit"] = [[True, False, False], [False, False, True]]
    routing_file = routing.write(tmp_path / ".edits" / "e1", doc, arrays)
    job = jobs.start(["finetune", str(parent.path), "--routing", str(routing_file), "--steps", "15", "--train",
                      "all", "--out", str(tmp_path), "--quiet", "--device", "cpu"], tmp_path / ".edits" / "job.log")
    while job.running:  # until it exits, however loaded the machine
        time.sleep(0.5)
    assert job.returncode == 0, job.output()
    child = next(r for r in list_runs(tmp_path)[0] if r.meta.get("parent") == parent.id)
    assert child.status == "done"
    child_doc, _ = child.routing()
    assert child_doc["allowed"]["digit"] == [[True, False, False], [False, False, True]]
    usage = child_doc["gate_stats"]["digit"]["usage"]
    assert usage[0][1] == usage[0][2] == 0 and usage[1][0] == usage[1][1] == 0  # only allowed experts used
