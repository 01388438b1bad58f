"""Bad input, generated (hypothesis): malformed configs, routing edits, corrupt run files, impossible
output folders. Each case must end in LsmnError (the CLI: one line on stderr, exit 2), never a
traceback, and no existing run may change. The number of cases run is printed at the end (-s)."""

import copy
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from helpers import REPO, generated
from lsmn.cli import main
from lsmn_core.store import routing
from lsmn_core.config import load_config
from lsmn_core.errors import LsmnError
from lsmn_core.store.runs import open_run

SAMPLES = REPO / "sample_runs"
ROUTED = ["digits-sparse", "digits-mann", "digits-mixture", "digits-moe", "kang-hyper"]
FUZZ = generated(250)
CASES = {"count": 0}

values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12), lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=4),
    max_leaves=8)


def leaves(node, path=()):
    """Every path to a value inside nested dicts and lists."""
    yield path
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from leaves(child, (*path, key))


def mutate(document, data):
    """A copy of `document` with one value replaced or deleted, or an unknown key added."""
    document = copy.deepcopy(document)
    path = data.draw(st.sampled_from(list(leaves(document))[1:]))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "delete":
        del parent[path[-1]]
    elif action == "add" and isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=8))] = data.draw(values)
    else:
        parent[path[-1]] = data.draw(values)
    return document


def fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module", autouse=True)
def samples_unchanged():
    before = {p.name: fingerprint(p) for p in SAMPLES.iterdir()}
    yield
    assert {p.name: fingerprint(p) for p in SAMPLES.iterdir()} == before
    print(f"\nbad-input cases run: {CASES['count']}")


def expect_clear_cli_error(argv, capsys):
    """The CLI fails with exit 2 and exactly one line on stderr, naming no Python internals."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lsmn: error: ") and err.count("\n") == 1 and "Traceback" not in err, err


QUICKSTART = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())


@FUZZ
@given(data=st.data())
def test_mutated_configs_are_accepted_or_refused_with_one_message(tmp_path_factory, capsys, data):
    CASES["count"] += 1
    folder = tmp_path_factory.mktemp("config")
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(mutate(QUICKSTART, data), allow_unicode=True))
    try:
        load_config(path)
    except LsmnError:
        expect_clear_cli_error(["train", str(path), "--out", str(folder / "runs"), "--quiet"], capsys)
        assert not (folder / "runs").exists() or not any((folder / "runs").iterdir())  # no run left behind


@FUZZ
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_arbitrary_text_as_a_config_is_refused_with_one_message(tmp_path_factory, capsys, text):
    CASES["count"] += 1
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path)
    except LsmnError:
        expect_clear_cli_error(["train", str(path), "--quiet"], capsys)


MODELS = {name: open_run(SAMPLES / name).load_model() for name in ROUTED}


@FUZZ
@given(sample=st.sampled_from(ROUTED), data=st.data())
def test_mutated_routing_edits_are_applied_or_refused(sample, data):
    """Wrong shapes, NaN, negative or out-of-range indices, unknown tasks: decode refuses with
    RoutingError, or what it accepts installs cleanly."""
    CASES["count"] += 1
    doc, arrays = open_run(SAMPLES / sample).routing()
    model = MODELS[sample]
    edited = mutate(doc, data)
    if data.draw(st.booleans()) and arrays:  # also damage one array: wrong shape, dtype or values
        key = data.draw(st.sampled_from(sorted(arrays)))
        arrays = {**arrays, key: data.draw(st.sampled_from([
            arrays[key][..., :-1], arrays[key].astype(np.float32) * np.nan, np.zeros((2,), np.int64),
            arrays[key].reshape(-1)]))}
    try:
        state = routing.decode(edited, arrays, model)
    except LsmnError:
        return
    routing.apply(copy.deepcopy(model), state)


@generated(25)
@given(sample=st.sampled_from(ROUTED), data=st.data())
def test_lsmn_eval_with_a_mutated_routing_file_evaluates_or_refuses(tmp_path_factory, capsys, sample, data):
    CASES["count"] += 1
    doc, arrays = open_run(SAMPLES / sample).routing()
    folder = tmp_path_factory.mktemp("edit")
    routing_file = routing.write(folder, mutate(doc, data), arrays)
    try:
        routing.decode(*routing.read(routing_file), MODELS[sample])
    except LsmnError:
        expect_clear_cli_error(["eval", str(SAMPLES / sample), "--routing", str(routing_file)], capsys)
        return
    assert main(["eval", str(SAMPLES / sample), "--routing", str(routing_file)]) == 0


@FUZZ
@given(sample=st.sampled_from(ROUTED + ["digits-hard"]), data=st.data())
def test_corrupt_run_files_are_reported_not_crashed_on(tmp_path_factory, capsys, sample, data):
    """Truncate, flip bytes in, empty or delete one file of a copy of a sample run; every reader and
    the CLI then either work or raise LsmnError."""
    CASES["count"] += 1
    run_dir = tmp_path_factory.mktemp("runs") / sample
    shutil.copytree(SAMPLES / sample, run_dir)
    target = run_dir / data.draw(st.sampled_from(sorted(p.name for p in run_dir.iterdir())))
    content = target.read_bytes()
    damage = data.draw(st.sampled_from(["truncate", "flip", "empty", "delete", "json"]))
    if damage == "truncate":
        target.write_bytes(content[:data.draw(st.integers(0, max(len(content) - 1, 0)))])
    elif damage == "flip" and content:
        where = data.draw(st.lists(st.integers(0, len(content) - 1), min_size=1, max_size=8))
        flipped = bytearray(content)
        for i in where:
            flipped[i] ^= 0xFF
        target.write_bytes(bytes(flipped))
    elif damage == "empty":
        target.write_bytes(b"")
    elif damage == "delete":
        target.unlink()
    elif target.suffix == ".json":
        target.write_text(json.dumps(mutate(json.loads(content), data)))
    try:
        run = open_run(run_dir)
        run.summary(), run.metrics(), run.progress(), run.routing(), run.masks()
        run.load_model()
    except LsmnError:
        pass
    code = main(["show", str(run_dir)])
    assert code in (0, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") <= 1, err


@pytest.mark.parametrize("blocker", ["file", "nested"])
def test_an_impossible_output_folder_is_one_clear_error(tmp_path, capsys, blocker):
    CASES["count"] += 1
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" if blocker == "file" else tmp_path / "file" / "runs"
    expect_clear_cli_error(["train", "configs/quickstart.yaml", "--out", str(out), "--quiet"], capsys)
