"""Training faults: a diverging loss, a killed or stopped process, and resuming to the same weights."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from helpers import PROCESS_PATIENCE, REPO
from lsmn.cli import main
from lsmn_core.config import load_config
from lsmn_core.store.runs import open_run

# Short sparse training (warm-up, pruning rounds, then the final phase with a checkpoint every 50 steps).
SHORT = ["train.steps=600", "scheme.warmup_steps=50", "scheme.round_steps=30", "train.eval_every=50",
         "train.patience=0", "train.device=cpu"]


def lsmn_process(*args):
    return subprocess.Popen([sys.executable, "-m", "lsmn", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def train_args(out):
    return ["train", "configs/quickstart.yaml", "--out", str(out), "--quiet", *[a for s in SHORT for a in ("--set", s)]]


def wait_for_checkpoint(out, process):
    """Until the run writes a checkpoint, or fails if the process ends first (no deadline: a loaded
    machine is slow, not wrong)."""
    while True:
        found = list(out.glob("*/checkpoint.safetensors"))
        if found:
            return found[0].parent
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)


def logged(run_dir):
    return [(r["step"], r["task"], r["split"], r["value"]) for r in open_run(run_dir).metrics()]


def test_a_diverging_loss_stops_the_run_and_marks_it_failed(tmp_path, capsys):
    code = main(["train", "configs/quickstart.yaml", "--out", str(tmp_path), "--quiet", "--set", "train.lr=1e30",
                 "--set", "train.device=cpu"])
    assert code == 2
    # checked at the next evaluation (no host sync per step), yet the first bad step is reported
    assert "the loss became nan or infinite at step 2 of phase warm-up" in capsys.readouterr().err
    (run_dir,) = tmp_path.iterdir()
    run = open_run(run_dir)
    assert run.status == "failed" and "TrainingError" in run.meta["reason"]
    assert not (run_dir / "model.safetensors").exists()  # nothing NaN was saved as a result
    assert main(["show", str(run_dir)]) == 2
    assert "status: failed: TrainingError: the loss became nan" in capsys.readouterr().err


def test_numbers_in_exponent_form_are_numbers():
    config = load_config(REPO / "configs" / "quickstart.yaml", ["train.lr=1e-3", "train.weight_decay=5e-5"])
    assert config.train.lr == 0.001 and config.train.weight_decay == 5e-5


def test_a_killed_run_reads_interrupted_and_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    whole = lsmn_process(*train_args(tmp_path / "whole"))
    assert whole.wait(timeout=PROCESS_PATIENCE) == 0, whole.communicate()
    (reference,) = (tmp_path / "whole").iterdir()

    killed = lsmn_process(*train_args(tmp_path / "killed"))
    run_dir = wait_for_checkpoint(tmp_path / "killed", killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=PROCESS_PATIENCE)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # as the dead process left it
    assert open_run(run_dir).status == "interrupted"  # its writer is gone

    resumed = lsmn_process("train", "--resume", str(run_dir), "--quiet")
    _, err = resumed.communicate(timeout=PROCESS_PATIENCE)
    assert resumed.returncode == 0, err
    assert open_run(run_dir).status == "done" and not list(run_dir.glob("checkpoint*"))
    expected, got = load_file(reference / "model.safetensors"), load_file(run_dir / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert (expected[name] == got[name]).all(), name
    assert logged(run_dir) == logged(reference)  # no step logged twice, none lost


def test_sigterm_marks_the_run_interrupted(tmp_path):
    process = lsmn_process(*train_args(tmp_path))
    run_dir = wait_for_checkpoint(tmp_path, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=PROCESS_PATIENCE)
    assert process.returncode == 130 and "interrupted" in err
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "interrupted" and "signal" in meta["reason"]


def test_a_run_on_another_host_reads_interrupted_once_its_heartbeat_is_old(tmp_path):
    main(["train", "configs/quickstart.yaml", "--out", str(tmp_path), "--quiet", "--set", "train.steps=5",
          "--set", "scheme={kind: hard}", "--set", "train.device=cpu"])
    (run_dir,) = tmp_path.iterdir()
    meta = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**meta, "status": "running", "host": "elsewhere"}))
    assert open_run(run_dir).status == "running"  # progress.json was just written
    old = time.time() - 3600
    for name in ("progress.json", "run.json"):
        os.utime(run_dir / name, (old, old))
    assert open_run(run_dir).status == "interrupted"


def test_only_interrupted_or_failed_runs_resume(capsys):
    assert main(["train", "--resume", str(REPO / "sample_runs" / "digits-sparse")]) == 2
    assert "is done; only an interrupted or failed run can be resumed" in capsys.readouterr().err
    assert main(["train", "configs/quickstart.yaml", "--resume", "x"]) == 2


@pytest.mark.parametrize("args", [["train"], ["train", "--resume", "nowhere"]])
def test_train_without_a_config_or_a_run_is_one_clear_error(args, capsys):
    assert main(args) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_run_folder_is_never_taken_for_a_folder_of_runs(tmp_path, capsys):
    """New runs never nest inside a run (nor inside a folder inside one), and a fine-tune of fewer
    than one step is refused: one line each, and nothing written."""
    run = tmp_path / "runs" / "digits-sparse"
    shutil.copytree(REPO / "sample_runs" / "digits-sparse", run)
    before = sorted(p.name for p in run.rglob("*"))
    for out in (run, run / "inner" / "deeper"):
        assert main(["train", "configs/quickstart.yaml", "--out", str(out), "--quiet"]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "not a folder of runs" in error
    assert main(["finetune", str(run), "--train", "all", "--steps", "-5", "--out", str(tmp_path / "children")]) == 2
    assert "steps must be a whole number >= 1" in capsys.readouterr().err
    assert sorted(p.name for p in run.rglob("*")) == before and not (tmp_path / "children").exists()
