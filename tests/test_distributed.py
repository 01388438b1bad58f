"""torchrun: 2 CPU processes (gloo) train data-parallel to the weights 1 process reaches with the same
global batch; only rank 0 writes the run. IMP's groups of tasks are shared out between the processes
and their masks gathered: the same masks as one process."""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from helpers import REPO
from lsmn_core.store.runs import open_run

# 40 final steps: AdamW divides each update by the gradient's running RMS, so where gradients are
# near zero (the first convolution's) the 1e-7 noise of a different summation order grows with
# every step; by step 100 it reaches 1e-2 in those weights, while 40 steps stay within 1e-5.
TRAIN = ["train.steps=40", "train.batch_size=32", "train.eval_every=20", "train.patience=0", "train.device=cpu"]
# No warm-up for the searches: a data-parallel warm-up ends 1e-7 away from one process's, and a
# pruning round's magnitude ranking can flip on that (it did on CI's machine), so the masks would
# agree only by chance; from the same start, and one thread per process as torchrun sets it, each
# search is bit for bit the one a single process runs.
SCHEMES = {"independent": ["scheme={kind: independent}"],  # quickstart's own scheme is sparse
           "sparse": ["scheme.warmup_steps=0", "scheme.round_steps=20"],
           # the tasks shared out: rank 0 searches digit, then ge5, rank 1 parity, then position
           "sparse, one task at once": ["scheme.warmup_steps=0", "scheme.round_steps=20",
                                        "scheme.tasks_at_once=1"]}


def train(out, *launcher, scheme):
    command = [*launcher, "train", "configs/quickstart.yaml", "--out", str(out), "--quiet",
               *[a for o in TRAIN + SCHEMES[scheme] for a in ("--set", o)]]
    one_thread = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=one_thread)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = out.iterdir()  # one run, however many processes
    return run_dir


# independent: a step trains one task, so every other task's parameters get no gradient in it;
# sparse: rank 0 searches digit and ge5 side by side, rank 1 parity and position; masked updates.
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_two_gloo_processes_reach_the_weights_of_one(tmp_path, scheme):
    runs = [train(tmp_path / "one", sys.executable, "-m", "lsmn", scheme=scheme),
            train(tmp_path / "two", sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc_per_node", "2", "-m", "lsmn", scheme=scheme)]
    one, two = (load_file(r / "model.safetensors") for r in runs)
    assert one.keys() == two.keys()
    for name in one:
        assert (one[name].float() - two[name].float()).abs().max() < 1e-4, name
    if scheme != "independent":  # every round's masks of every task, searched wherever they were
        masks = [load_file(r / "routing.safetensors") for r in runs]
        assert masks[0].keys() == masks[1].keys() and any(k.startswith("rounds.") for k in masks[0])
        assert all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
        logged = [[(m["task"], m["value"]) for m in open_run(r).metrics() if m["phase"].startswith("prune")]
                  for r in runs]
        assert sorted(logged[0]) == sorted(logged[1]) and len({task for task, _ in logged[1]}) == 4  # rank 1's too
