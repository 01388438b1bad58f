"""The `lsmn` command end to end, as a user runs it (subprocesses, real files)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from helpers import REPO


def lsmn(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "lsmn", *map(str, args)], capture_output=True, text=True,
                            cwd=REPO)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    result = lsmn("train", "configs/quickstart.yaml", "--out", out, "--quiet", "--device", "cpu",
                  "--set", "train.steps=150", "--set", "scheme.round_steps=25", "--set", "scheme.warmup_steps=20",
                  "--set", "model.width=32")
    path = result.stdout.strip().splitlines()[-1]
    return out, path


def test_train_prints_the_run_path_last(quickstart_run):
    out, path = quickstart_run
    assert path.startswith(str(out)) and json.load(open(f"{path}/run.json"))["status"] == "done"


def test_show_json_matches_the_masks_in_routing_safetensors(quickstart_run):
    _, path = quickstart_run
    shown = json.loads(lsmn("show", path, "--json").stdout)
    assert {"run", "scheme", "tasks", "metrics", "params", "density", "overlap"} <= set(shown)
    assert shown["tasks"] == ["digit", "parity", "ge5", "position"]
    # recompute from the raw file, independently of the project's readers
    doc = json.load(open(f"{path}/routing.json"))
    arrays = load_file(f"{path}/routing.safetensors")
    flat = np.concatenate([
        np.unpackbits(arrays[e["key"]], axis=-1, count=e["shape"][-1]).reshape(e["shape"][0], -1)
        for e in doc["masks"].values()], axis=1).astype(bool)
    inter = flat.astype(np.int64) @ flat.T.astype(np.int64)
    for i in range(4):
        assert shown["density"][shown["tasks"][i]] == pytest.approx(flat[i].mean())
        for j in range(4):
            union = inter[i, i] + inter[j, j] - inter[i, j]
            assert shown["overlap"]["pairwise"][i][j] == pytest.approx(inter[i, j] / union)
    assert shown["overlap"]["global"] == pytest.approx(flat.all(0).sum() / flat.any(0).sum())
    assert all(shown["params"]["active"][t] < shown["params"]["total"] for t in shown["tasks"])


def test_show_prints_a_readable_summary(quickstart_run):
    _, path = quickstart_run
    text = lsmn("show", path).stdout
    assert "mask overlap ratio" in text and "position" in text and "active params" in text


def test_eval_under_an_edited_routing(quickstart_run, tmp_path):
    _, path = quickstart_run
    unchanged = json.loads(lsmn("eval", path, "--json", "--device", "cpu").stdout)
    assert all(abs(m["test_delta"]) < 1e-6 for m in unchanged["metrics"].values())
    # edit: give task 'digit' the empty mask -> its body is skipped, the other tasks are unchanged
    doc = json.load(open(f"{path}/routing.json"))
    arrays = load_file(f"{path}/routing.safetensors")
    for entry in doc["masks"].values():
        arrays[entry["key"]][0] = 0
    (tmp_path / "routing.json").write_text(json.dumps(doc))
    save_file(arrays, str(tmp_path / "routing.safetensors"))
    edited = json.loads(lsmn("eval", path, "--routing", tmp_path / "routing.json", "--json").stdout)
    assert edited["metrics"]["parity"]["test_delta"] == pytest.approx(0, abs=1e-6)
    assert edited["params"]["active"]["digit"] < unchanged["params"]["active"]["digit"]
    assert edited["metrics"]["digit"]["test"] != unchanged["metrics"]["digit"]["test"]
    # the run itself is untouched
    assert load_file(f"{path}/routing.safetensors").keys() == arrays.keys()
    assert json.loads(lsmn("eval", path, "--json").stdout)["metrics"] == unchanged["metrics"]


@pytest.mark.parametrize("edit, message", [
    (lambda doc, arrays: doc.update(tasks=["a", "b"]), "do not match the run's tasks"),
    (lambda doc, arrays: arrays.update({k: v[:, :1] for k, v in arrays.items()}), "expected uint8"),
    (lambda doc, arrays: doc.update(mask_encoding="zip"), "unknown mask_encoding"),
    (lambda doc, arrays: doc["masks"].popitem(), "do not match the model's prunable weights"),
])
def test_invalid_routing_is_refused_with_one_line(quickstart_run, tmp_path, edit, message):
    _, path = quickstart_run
    doc = json.load(open(f"{path}/routing.json"))
    arrays = {k: v for k, v in load_file(f"{path}/routing.safetensors").items() if k.startswith("masks.")}
    edit(doc, arrays)
    (tmp_path / "routing.json").write_text(json.dumps(doc))
    save_file(arrays, str(tmp_path / "routing.safetensors"))
    result = lsmn("eval", path, "--routing", tmp_path, check=False)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


def test_list_and_compare(quickstart_run, sparse_run):
    out, path = quickstart_run
    listing = lsmn("list", out).stdout
    assert "sparse" in listing and "done" in listing and "digit, parity, ge5, position" in listing
    table = lsmn("compare", path, sparse_run).stdout
    assert table.splitlines()[0].startswith("| task | metric |") and "| position | accuracy |" in table
    rows = json.loads(lsmn("compare", path, sparse_run, "--json").stdout)
    assert [r["task"] for r in rows] == ["digit", "parity", "ge5", "position"]


@pytest.mark.parametrize("args, message", [
    (("show", "/nonexistent/run"), "not a run directory"),
    (("eval", "/nonexistent/run"), "not a run directory"),
    (("compare", "/nonexistent/run"), "not a run directory"),
])
def test_missing_runs_are_one_line_errors(args, message):
    result = lsmn(*args, check=False)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
