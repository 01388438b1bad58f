"""torchrun: 2 CPU processes (gloo) train data-parallel to the weights 1 process reaches with the same
global batch; only rank 0 writes the run."""

import subprocess
import sys

import pytest
from safetensors.torch import load_file

from helpers import REPO

# 40 final steps: AdamW divides each update by the gradient's running RMS, so where gradients are
# near zero (the first convolution's) the 1e-7 noise of a different summation order grows with
# every step; by step 100 it reaches 1e-2 in those weights, while 40 steps stay within 1e-5.
TRAIN = ["train.steps=40", "train.batch_size=32", "train.eval_every=20", "train.patience=0", "train.device=cpu"]
SCHEMES = {"independent": ["scheme={kind: independent}"],  # quickstart's own scheme is sparse
           "sparse": ["scheme.warmup_steps=40", "scheme.round_steps=20"]}


def train(out, *launcher, scheme):
    command = [*launcher, "train", "configs/quickstart.yaml", "--out", str(out), "--quiet",
               *[a for o in TRAIN + SCHEMES[scheme] for a in ("--set", o)]]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = out.iterdir()  # one run, however many processes
    return load_file(run_dir / "model.safetensors")


# independent: a step trains one task, so every other task's parameters get no gradient in it;
# sparse: pruning rounds and masked updates, decided in each process from the same weights.
@pytest.mark.parametrize("scheme", ["independent", "sparse"])
def test_two_gloo_processes_reach_the_weights_of_one(tmp_path, scheme):
    one = train(tmp_path / "one", sys.executable, "-m", "lsmn", scheme=scheme)
    two = train(tmp_path / "two", sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", "-m", "lsmn", scheme=scheme)
    assert one.keys() == two.keys()
    for name in one:
        assert (one[name].float() - two[name].float()).abs().max() < 1e-4, name
