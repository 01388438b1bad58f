import math

import pytest
import torch
from safetensors.numpy import load_file as load_safetensors

from helpers import TINY, random_masks, tiny_config
from lsmn_core.data.loading import load_tasks
from lsmn_core.schemes.magnitude import density, prune_by_magnitude
from lsmn_core.schemes import build_model
from lsmn_core.training.session import Phase
from lsmn_core.store.runs import open_run
from lsmn_core.training.trainer import DeviceTasks, Reporter, TrainingSession


def test_prune_removes_the_smallest_surviving_weights_globally():
    weights = {"a": torch.tensor([[0.1, -5.0], [0.3, 2.0]]), "b": torch.tensor([-0.2, 4.0, 0.05, 1.0])}
    masks = {"a": torch.tensor([[True, True], [True, True]]), "b": torch.tensor([True, True, False, True])}
    pruned = prune_by_magnitude(weights, masks, rate=3 / 7)  # 7 survive -> drop 3: 0.1, -0.2, 0.3
    assert pruned["a"].tolist() == [[False, True], [False, True]]
    assert pruned["b"].tolist() == [False, True, False, True]  # 0.05 was already gone
    assert masks["a"].all()  # inputs untouched


def test_imp_rounds_follow_the_schedule_and_the_best_round_is_installed(sparse_run):
    run = open_run(sparse_run)
    summary = run.summary()
    options = run.config().scheme
    stored = run.masks()
    for t, task in enumerate(run.task_names):
        report = summary["search"]["pruning"][task]
        densities = [r["density"] for r in report["rounds"]]
        expected = [(1 - options.prune_rate) ** i for i in range(len(densities))]
        assert all(math.isclose(d, e, abs_tol=2e-3) for d, e in zip(densities, expected))
        assert densities[-1] <= options.min_density < densities[-2]
        chosen = next(r for r in report["rounds"] if r["round"] == report["chosen"])
        best_dev = max(r["dev"] for r in report["rounds"])
        assert chosen["dev"] == best_dev
        assert chosen["density"] == min(r["density"] for r in report["rounds"] if r["dev"] == best_dev)
        task_density = density({n: torch.from_numpy(m[t]) for n, m in stored.items()})
        assert math.isclose(task_density, chosen["density"], abs_tol=1e-9)
        assert math.isclose(summary["density"][task], task_density, abs_tol=1e-6)


def test_round_masks_are_nested(sparse_run):
    from lsmn_core.store import routing

    run = open_run(sparse_run)
    doc = run.routing()[0]
    arrays = load_safetensors(run.path / "routing.safetensors")  # the rounds are in the file, not in the routing
    shapes = {name: entry["shape"][1:] for name, entry in doc["masks"].items()}
    for task in run.task_names:
        for name, shape in shapes.items():
            packed = arrays[f"rounds.{task}.{name}"]
            rounds = routing.unpack(packed, [packed.shape[0], *shape])
            for earlier, later in zip(rounds, rounds[1:]):
                assert not (later & ~earlier).any()


def test_multitask_step_changes_only_the_sampled_tasks_subnetwork():
    config = tiny_config(train={"steps": 1, "batch_size": 16, "eval_every": 1, "device": "cpu"})
    data = load_tasks(config.tasks, config.data)
    model = build_model([d.spec for d in data], config)
    random_masks(model, seed=1, keep=0.5)
    session = TrainingSession(model, DeviceTasks(data, torch.device("cpu")), config, Reporter(None, quiet=True))
    before = {n: p.detach().clone() for n, p in model.body.named_parameters()}
    session.train(Phase("train", [0, 1, 2], 40, early_stopping=False))  # momentum from all three tasks
    for name, p in model.body.named_parameters():
        if model.body.prunable(name):
            used_by_any = model.body.mask_of(name).any(0)
            assert torch.equal(p[~used_by_any], before[name][~used_by_any])
    # one more step on task 0 alone: weights outside task 0's mask keep their values
    snapshot = {n: p.detach().clone() for n, p in model.body.named_parameters()}
    session.train(Phase("train", [0], 1, early_stopping=False))
    for name, p in model.body.named_parameters():
        if model.body.prunable(name):
            outside = ~model.body.mask_of(name)[0]
            assert torch.equal(p[outside], snapshot[name][outside])
            assert not torch.equal(p, snapshot[name])


def _search(tasks_at_once, prune_encoders=False):
    config = tiny_config(scheme={**TINY["scheme"], "tasks_at_once": tasks_at_once, "warmup_steps": 5,
                                 "prune_encoders": prune_encoders})
    data = load_tasks(config.tasks, config.data)
    model = build_model([d.spec for d in data], config)
    session = TrainingSession(model, DeviceTasks(data, torch.device("cpu")), config, Reporter(None, quiet=True))
    report = model.body.search_routing(session)
    return report, {n: m.clone() for n, m in model.body.masks().items()}, model.state_dict(), session.step


@pytest.mark.parametrize("prune_encoders", [False, True])
def test_tasks_pruned_side_by_side_get_the_masks_they_get_one_after_another(prune_encoders):
    together, masks_together, weights_together, steps_together = _search(3, prune_encoders)
    alone, masks_alone, weights_alone, steps_alone = _search(1, prune_encoders)
    assert any(name.startswith("encoders.") for name in masks_alone) == prune_encoders
    assert steps_together < steps_alone  # side by side: one step trains every task
    for task, report in alone.summary["pruning"].items():
        other = together.summary["pruning"][task]
        assert other["chosen"] == report["chosen"]
        assert [r["density"] for r in other["rounds"]] == [r["density"] for r in report["rounds"]]
        assert all(math.isclose(a["dev"], b["dev"], abs_tol=1e-6) for a, b in zip(other["rounds"], report["rounds"]))
    for name, mask in masks_alone.items():
        assert torch.equal(masks_together[name], mask)
        assert 0 < mask.float().mean() < 1
    for name, weight in weights_alone.items():  # both rewind the shared model to theta_w
        assert torch.equal(weights_together[name], weight)
    assert {name for name in alone.arrays} == {name for name in together.arrays}
