"""Several writers at once, and readers while a run is being written: no shared folder, no half-read
file, no crash; and the app serves only this machine unless told otherwise."""

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import tomllib

from helpers import REPO
from lsmn_core.config import load_config
from lsmn_core.data.loading import load_tasks
from lsmn_core.errors import LsmnError
from lsmn_core.store.runs import RunWriter, list_runs


def test_writers_starting_at_once_get_their_own_folders(tmp_path):
    config = load_config(REPO / "configs" / "quickstart.yaml")
    specs = [d.spec for d in load_tasks(config.tasks, config.data)]
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: RunWriter(tmp_path, config, specs, "cpu", folder="same").path, range(16)))
    assert len(set(paths)) == 16 and all(p.parent == tmp_path for p in paths)


def test_two_jobs_write_while_a_reader_polls_them(tmp_path):
    """Two trainings into one folder while the reader side of the app reads every file of both,
    over and over: the reads see finished files or a clear 'not yet', never a crash."""
    command = [sys.executable, "-m", "lsmn", "train", "configs/quickstart.yaml", "--out", str(tmp_path),
               "--quiet", "--set", "train.steps=150", "--set", "train.device=cpu", "--set", "scheme.warmup_steps=30",
               "--set", "scheme.round_steps=20", "--set", "train.eval_every=25"]
    jobs = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    reads = refusals = 0
    while any(job.poll() is None for job in jobs):
        runs, broken = list_runs(tmp_path)
        assert not broken, broken  # a run being written is never mistaken for a corrupt one
        for run in runs:
            run.status, run.progress(), run.metrics()
            try:
                run.summary(), run.routing(), run.masks(), run.load_model()
            except LsmnError:
                refusals += 1  # not written yet
            reads += 1
        time.sleep(0.05)  # leave the two cores mostly to the jobs
    assert [job.wait() for job in jobs] == [0, 0], [job.stderr.read()[-500:] for job in jobs]
    runs, _ = list_runs(tmp_path)
    assert len(runs) == 2 and all(r.status == "done" for r in runs)
    assert reads > 10 and refusals > 0


def test_the_app_serves_only_this_machine_by_default():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
