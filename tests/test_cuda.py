"""Where CUDA exists: `--device auto` trains there under bf16 autocast, close to the CPU's results,
and the training step never waits for the device. Skipped on machines without CUDA (CI has none)."""

import warnings

import pytest
import torch

from helpers import tiny_config
from lsmn_core.data.loading import load_tasks
from lsmn_core.schemes import build_model
from lsmn_core.training.session import Phase
from lsmn_core.store.runs import open_run
from lsmn_core.training.trainer import DeviceTasks, Reporter, TrainingSession, resolve_device, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def session_on(device: str, bf16: bool = True, scheme: dict | None = None):
    config = tiny_config(train={"steps": 20, "batch_size": 32, "eval_every": 10, "device": device, "bf16": bf16},
                         **({"scheme": scheme} if scheme else {}))
    data = load_tasks(config.tasks, config.data)
    model = build_model([d.spec for d in data], config).to(device)  # same seed: same initial weights
    return TrainingSession(model, DeviceTasks(data, torch.device(device)), config, Reporter(None, quiet=True))


def test_auto_picks_cuda_and_the_run_records_it(tmp_path):
    assert resolve_device("auto").type == "cuda"
    run = open_run(train(tiny_config(train={"steps": 40, "eval_every": 20, "device": "auto"}), tmp_path, quiet=True))
    assert run.meta["device"].startswith("cuda")
    assert run.status == "done"


def test_a_bf16_loss_on_cuda_is_the_float32_loss_on_cpu_within_bf16_precision():
    cpu, cuda = session_on("cpu"), session_on("cuda")
    losses = [s.step_loss([0, 1, 2]).item() for s in (cpu, cuda)]  # equal generators: equal batches
    assert losses[1] == pytest.approx(losses[0], rel=2e-2)


def test_float32_training_on_cuda_reaches_the_cpu_weights(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # full float32 convolutions, as on CPU
    sessions = [session_on(d, bf16=False) for d in ("cpu", "cuda")]
    for s in sessions:
        s.train(Phase("train", [0, 1, 2], 20, early_stopping=False))
    for (name, a), b in zip(sessions[0].model.state_dict().items(), sessions[1].model.state_dict().values()):
        assert torch.allclose(a.float(), b.float().cpu(), atol=2e-3), name


@pytest.mark.parametrize("scheme", [None, {"kind": "moe", "experts": 4, "top_k": 2}])
def test_the_training_step_does_not_wait_for_the_device(scheme):
    """Syncs come from the phase's end (one divergence check), never from each step: also with
    experts (every expert on every row, not nonzero per expert)."""
    def syncs(steps):
        session = session_on("cuda", scheme=scheme)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                session.train(Phase("train", [0, 1, 2], steps, early_stopping=False))
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(20) == syncs(5)
