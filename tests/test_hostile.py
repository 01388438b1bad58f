"""Hostile run folders and outputs: values a valid file never holds (special files in place of run
files or outputs, run.json fields of the wrong type or size, JSON too deep or with integers too long
for Python, oversized safetensors headers, task names that are paths) give one line and a non-zero
exit, never replace what the project does not own, and never break the runs beside them."""

import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys

import pytest

from helpers import PROCESS_PATIENCE, REPO, TINY, tiny_config
from lsmn.cli import main
from lsmn_core.config import TaskConfig
from lsmn_core.errors import ConfigError, RunError
from lsmn_core.store.files import atomic_write, new_folder, read_json
from lsmn_core.store.runs import RunWriter, list_runs, open_run
from lsmn_core.data.tasks import TaskSpec


def copy_run(sparse_run, folder):
    target = folder / sparse_run.name
    shutil.copytree(sparse_run, target)
    return target


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and len(err) <= 520 and "Traceback" not in err
    return err


@pytest.mark.parametrize("make", ["fifo", "symlink", "folder"])
def test_an_output_that_is_not_a_regular_file_is_left_alone(sparse_run, tmp_path, capsys, make):
    target, elsewhere = tmp_path / "out.safetensors", tmp_path / "precious"
    elsewhere.write_text("keep me")
    {"fifo": lambda: os.mkfifo(target), "symlink": lambda: target.symlink_to(elsewhere),
     "folder": target.mkdir}[make]()
    assert main(["export", str(sparse_run), "--out", str(target)]) == 2
    assert "not replaced unless you say so (--force)" in one_error_line(capsys)
    assert main(["export", str(sparse_run), "--out", str(target), "--force"]) == 2  # not even then
    assert "will not replace" in one_error_line(capsys)
    assert elsewhere.read_text() == "keep me"
    assert {"fifo": target.is_fifo, "symlink": target.is_symlink, "folder": target.is_dir}[make]()
    assert not list(tmp_path.glob(".*.tmp"))


def test_os_errors_on_write_are_one_line_naming_the_path(sparse_run, tmp_path, capsys):
    assert main(["export", str(sparse_run), "--out", str(tmp_path / "missing" / "x.safetensors")]) == 2
    error = one_error_line(capsys)
    assert "cannot write" in error and "missing/x.safetensors" in error and "No such file or directory" in error
    with pytest.raises(RunError, match="cannot write .*File name too long"):
        atomic_write(tmp_path / ("x" * 300), lambda tmp: open(tmp, "w").close())


def test_a_folder_written_through_new_folder_appears_whole_or_not_at_all(tmp_path):
    theirs = tmp_path / ".out.partial"  # a folder named as partial folders once were: never touched
    theirs.mkdir()
    with new_folder(tmp_path / "out") as partial:
        (partial / "a.txt").write_text("done")
    assert (tmp_path / "out" / "a.txt").read_text() == "done"
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~umask  # a folder like any the user makes
    with pytest.raises(OSError):
        with new_folder(tmp_path / "cut") as partial:
            (partial / "a.txt").write_text("half")
            raise OSError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.partial", "out"]


def _files_of_at_most(size):
    """For a child process: files it writes stop growing at `size` bytes, as on a full disk (Python
    ignores SIGXFSZ, so a write past the limit fails with an OSError instead of killing it)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def test_a_full_disk_while_training_is_one_line_and_leaves_the_run_marked_failed(tmp_path):
    config = tmp_path / "tiny.json"  # JSON is YAML
    config.write_text(json.dumps(TINY))
    process = subprocess.run(
        [sys.executable, "-m", "lsmn", "train", str(config), "--out", str(tmp_path / "runs"), "--quiet"],
        cwd=REPO, capture_output=True, text=True, preexec_fn=_files_of_at_most(12_000), timeout=PROCESS_PATIENCE)
    assert process.returncode == 2, process.stderr
    error = process.stderr.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    assert re.fullmatch(r"lsmn: error: cannot write \S+: File too large", error), error
    (run_dir,) = (tmp_path / "runs").iterdir()
    run = open_run(run_dir)
    assert run.status == "failed" and "File too large" in run.meta["reason"]
    assert not list(run_dir.glob(".*.tmp"))  # no half-written temporary file is left behind
    assert main(["show", str(run_dir)]) == 2  # a failed run, said so, not a crash


def test_when_the_status_write_fails_too_the_error_says_both(tmp_path, monkeypatch):
    config = tiny_config()
    writer = RunWriter(tmp_path, config, [TaskSpec("digit", "classification", 10, "image", [1, 16, 16])], "cpu")

    def disk_full(path, data):
        raise RunError(f"cannot write {path}: No space left on device")
    monkeypatch.setattr("lsmn_core.store.runs.write_json", disk_full)
    cause = RunError("cannot write metrics.jsonl: No space left on device")
    with pytest.raises(RunError) as raised:
        writer.end(cause)
    message = str(raised.value)
    assert message.startswith("RunError: cannot write metrics.jsonl") and "status could not be recorded" in message
    assert raised.value.__cause__ is cause
    monkeypatch.undo()
    assert open_run(writer.path).meta["status"] == "running"  # what the disk kept: the writer is this process


HOSTILE_META = {
    "created is a number": lambda m: {**m, "created": 5},
    "pid beyond any process id": lambda m: {**m, "pid": 10**30},
    "tasks of the wrong type": lambda m: {**m, "tasks": "digit"},
    "a name of a megabyte": lambda m: {**m, "name": "x" * 2**20},
}
HOSTILE_TEXT = {
    "nesting 100,000 deep": "[" * 100_000 + "]" * 100_000,
    "an integer of 5,000 digits": '{"schema_version": ' + "9" * 5000 + "}",
}


def test_one_hostile_run_json_never_breaks_the_runs_beside_it(sparse_run, tmp_path, capsys):
    good = copy_run(sparse_run, tmp_path)
    meta = json.loads((good / "run.json").read_text())
    for name, change in HOSTILE_META.items():
        (tmp_path / name.replace(" ", "-")).mkdir()
        (tmp_path / name.replace(" ", "-") / "run.json").write_text(json.dumps(change(meta)))
    for name, text in HOSTILE_TEXT.items():
        (tmp_path / name.replace(" ", "-")).mkdir()
        (tmp_path / name.replace(" ", "-") / "run.json").write_text(text)
    runs, broken = list_runs(tmp_path)
    assert [r.path for r in runs] == [good]
    assert len(broken) == len(HOSTILE_META) + len(HOSTILE_TEXT)
    assert all(len(why) < 400 for _, why in broken)
    assert main(["list", str(tmp_path)]) == 0 and good.name in capsys.readouterr().out


def test_a_run_json_cannot_choose_where_the_app_writes(sparse_run, tmp_path):
    path = copy_run(sparse_run, tmp_path)
    meta = json.loads((path / "run.json").read_text())
    (path / "run.json").write_text(json.dumps({**meta, "id": str(tmp_path.parent / "elsewhere")}))
    assert open_run(path).id == path.name  # the id is the folder's name, whatever run.json says


def test_special_files_in_place_of_run_files_are_refused_without_opening_them(sparse_run, tmp_path, capsys):
    """A FIFO would block a reader forever; these return at once."""
    path = copy_run(sparse_run, tmp_path)
    for name in ("model.safetensors", "routing.json", "summary.json"):
        (path / name).unlink()
        os.mkfifo(path / name)
    run = open_run(path)
    with pytest.raises(RunError, match="not a regular file"):
        run.load_model()
    with pytest.raises(RunError, match="not a regular file"):
        run.summary()
    assert main(["eval", str(path)]) == 2 and "not a regular file" in one_error_line(capsys)
    assert main(["show", str(path)]) == 2 and "not a regular file" in one_error_line(capsys)


def test_an_oversized_safetensors_header_is_refused_before_it_is_parsed(sparse_run, tmp_path):
    path = copy_run(sparse_run, tmp_path)
    (path / "model.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(RunError, match="header of 1,099,511,627,776 bytes"):
        open_run(path).load_model()


def test_a_metrics_line_with_a_huge_integer_is_skipped(sparse_run, tmp_path):
    path = copy_run(sparse_run, tmp_path)
    count = len(open_run(path).metrics())
    with open(path / "metrics.jsonl", "a") as f:
        f.write('{"step": ' + "9" * 5000 + "}\n" + "[" * 50_000 + "\n")
    assert len(open_run(path).metrics()) == count


def test_json_limits(tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(RunError, match="nested too deeply"):
        read_json(tmp_path / "deep.json")
    (tmp_path / "latin1.json").write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(RunError, match="not UTF-8"):
        read_json(tmp_path / "latin1.json")


@pytest.mark.parametrize("name", ["a.b", "", "../x", "x/y", 5, "t" * 101, "tab\there"])
def test_task_names_that_would_become_paths_or_parameter_names_are_refused(name):
    with pytest.raises(ConfigError, match=r"tasks\[0\].name: (.* must be 1 to 100 characters|expected a string)"):
        tiny_config(tasks=[{"name": name, "dataset": "digits", "target": "digit"}])


@pytest.mark.parametrize("name", ["half", "keys", "train", "to", "__class__"])
def test_task_names_that_are_attributes_of_the_heads_container_are_refused(name, tmp_path):
    """A head per task lives in a ModuleDict under the task's name; `half` or `keys` crashed building it."""
    with pytest.raises(ConfigError, match=rf"tasks\[0\].name: '{name}' is the name of an attribute of torch's module"):
        tiny_config(tasks=[{"name": name, "dataset": "digits", "target": "digit"}])
    from lsmn_core.training.finetune import FinetunePlan

    with pytest.raises(ConfigError, match=rf"--add-task: '{name}' is the name of an attribute"):
        FinetunePlan(5, "all", [TaskConfig(name=name, dataset="digits", target="mod3")]).check(["digit"])


def test_a_very_long_run_name_trains_in_a_folder_of_bounded_name(tmp_path):
    config = tiny_config(train={"steps": 2, "eval_every": 2, "batch_size": 8, "device": "cpu"})
    config.name = "n" * 300
    from lsmn_core.training.trainer import train

    run = open_run(train(config, tmp_path, quiet=True))
    assert run.status == "done" and len(run.path.name) <= 120


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
HOSTILE_CONFIGS = {
    "an alias bomb": (BOMB.encode(), "YAML aliases"),
    "nesting 100,000 deep": (b"name: " + b"[" * 100_000 + b"]" * 100_000, "nested more than 32 levels"),
    "an integer of 5,000 digits": (b"name: x\nseed: " + b"9" * 5000, "digits"),
    "latin-1 text": ("name: café\ntasks: []\n".encode("latin-1"), "not UTF-8"),
    "a negative seed": (b"name: x\nseed: -1\ntasks: [{name: d, dataset: digits, target: digit}]", "seed: must be in 0"),
    "a width of ten million": (b"name: x\nmodel: {width: 10000000}\ntasks: [{name: d, dataset: digits, target: digit}]",
                               "model.width: must be in 1 .. 65,536"),
    "an integer of 40 digits": (b"name: x\ntrain: {steps: " + b"9" * 40 + b"}\ntasks: []", "out of range"),
    "a megabyte of a name": (b"name: x\ntasks: [{name: " + b"n" * 2**20 + b", dataset: digits}]", "more than"),
}


@pytest.mark.parametrize("family", list(HOSTILE_CONFIGS))
def test_hostile_configs_get_one_short_line_and_no_run_folder(tmp_path, capsys, family):
    text, message = HOSTILE_CONFIGS[family]
    (tmp_path / "config.yaml").write_bytes(text)
    assert main(["train", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_a_model_too_large_for_this_machine_is_refused_with_its_estimate_before_a_folder_exists(tmp_path, capsys):
    config = tmp_path / "big.yaml"
    config.write_text("name: big\ntasks: [{name: d, dataset: digits, target: digit}]\n"
                      "model: {width: 65536, depth: 64, expansion: 64}\nscheme: {kind: hard}\n")
    assert main(["train", str(config), "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    error = one_error_line(capsys)
    assert "parameters need about" in error and "GiB to train" in error
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("field, value, message", [
    ("n_outputs", 10**9, "n_outputs must be an integer"), ("n_outputs", -1, "n_outputs"),
    ("n_outputs", "10", "n_outputs"),
    ("name", "a.b", "not a valid task name|name exactly the run's tasks"), ("name", 5, "each with a name"),
    ("input_shape", [10**6, 10**6], "input_shape"), ("kind", "poetry", "unknown kind"),
])
def test_stored_task_fields_that_would_size_the_model_wrongly_are_refused(sparse_run, tmp_path, capsys, field, value,
                                                                          message):
    path = copy_run(sparse_run, tmp_path)
    meta = json.loads((path / "run.json").read_text())
    meta["tasks"][0][field] = value
    (path / "run.json").write_text(json.dumps(meta))
    for command in (["show", str(path)], ["eval", str(path)], ["export", str(path), "--out", str(tmp_path / "e")]):
        assert main(command) == 2, command
        assert re.search(message, one_error_line(capsys))
    assert not (tmp_path / "e").exists()


@pytest.fixture(scope="module")
def mixture_run(tmp_path_factory):
    from lsmn_core.training.trainer import train

    config = tiny_config(scheme={"kind": "mixture", "templates": 2},
                         train={"steps": 4, "eval_every": 4, "batch_size": 8, "device": "cpu"})
    return open_run(train(config, tmp_path_factory.mktemp("mixture"), quiet=True))


HOSTILE_EDITS = {
    "schema_version 99": (lambda doc: json.dumps({**doc, "schema_version": 99}), "schema_version 99 is not 1"),
    "a 400-digit weight": (lambda doc: json.dumps({**doc, "signatures": {
        **doc["signatures"], "digit": [[10**400, 0], [1, 0]]}}), "signature of digit: expected numbers"),
    "nesting 100,000 deep": (lambda doc: "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "100,000 task names": (lambda doc: json.dumps({**doc, "tasks": ["t"] * 100_000}), "do not match"),
}


@pytest.mark.parametrize("family", list(HOSTILE_EDITS))
def test_hostile_routing_edits_are_refused_in_one_line_and_change_nothing(mixture_run, tmp_path, capsys, family):
    edit, message = HOSTILE_EDITS[family]
    before = (mixture_run.path / "routing.json").read_bytes()
    doc = json.loads(before)
    (tmp_path / "edit.json").write_text(edit(doc))
    assert main(["eval", str(mixture_run.path), "--routing", str(tmp_path / "edit.json")]) == 2
    assert message in one_error_line(capsys)
    assert (mixture_run.path / "routing.json").read_bytes() == before


def damage_summary(summary):
    summary["routing"]["gate_stats"]["digit"] = "garbage"
    return summary


def damage_routing(doc):
    doc["history"] = [{"generation": "x"}, 5]
    return doc


@pytest.mark.parametrize("sample, file, damage", [
    ("digits-moe", "summary.json", damage_summary),
    ("kang-hyper", "routing.json", damage_routing),
    ("digits-sparse", "summary.json", lambda s: [1, 2]),
    ("digits-sparse", "summary.json", lambda s: {**s, "metrics": {**s["metrics"], "digit": {"test": "high"}}}),
    ("digits-hard", "metrics.jsonl", None),
])
def test_every_app_page_survives_garbage_in_a_scheme_s_own_data(tmp_path, monkeypatch, sample, file, damage):
    from streamlit.testing.v1 import AppTest

    import app.state
    from helpers import APP_PATIENCE, REPO

    path = tmp_path / sample
    shutil.copytree(REPO / "sample_runs" / sample, path)
    if damage is None:  # metrics lines of the wrong types
        (path / file).write_text('{"step": "x", "task": 1, "value": "v"}\\n{"step": 1, "task": "t", "value": []}\\n')
    else:
        (path / file).write_text(json.dumps(damage(json.loads((path / file).read_text()))))
    monkeypatch.setattr(app.state, "DEFAULT_RUNS", str(tmp_path))
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=APP_PATIENCE).run()
    for page in ["views/overview.py", "views/masks.py", "views/signatures.py", "views/sharing.py",
                 "views/attributions.py", "views/edit.py", "views/compare.py"]:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)


def test_markdown_in_a_run_s_name_and_device_is_shown_as_plain_text(sparse_run, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import app.state
    from app.text import plain
    from helpers import APP_PATIENCE, REPO

    link = "![x](http://127.0.0.1:9/leak.png) **bold** <img src=x>"
    assert plain("![x](u) *b* <i>") == r"\!\[x\]\(u\) \*b\* \<i\>"
    path = copy_run(sparse_run, tmp_path)
    meta = json.loads((path / "run.json").read_text())
    (path / "run.json").write_text(json.dumps({**meta, "name": link, "device": link}))
    monkeypatch.setattr(app.state, "DEFAULT_RUNS", str(tmp_path))
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=APP_PATIENCE).run()
    assert not at.exception
    shown = [e.value for e in (*at.title, *at.caption)]
    assert any(plain(link) in text for text in shown) and not any(link in text for text in shown)
