"""PackNet (mann on a checkpoint): tasks packed one after another into the target weights, each
owning its share of every target (the largest free weights), the freed weights back at their
pretrained values, masks nested in the config's order; a task added later leaves every earlier
task's outputs bit-identical; shares that leave a task nothing free are refused in one line."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lsmn.cli import main
from lsmn_core.config import TaskConfig, parse_config
from lsmn_core.errors import ConfigError
from lsmn_core.store.runs import DATA_CACHE, open_run
from lsmn_core.training.finetune import FinetunePlan, finetune
from lsmn_core.training.trainer import train
from tiny_models import SENTENCE_TASKS



def packnet_config(bert, tasks=SENTENCE_TASKS, keep=0.3, steps=0) -> dict:
    return {"name": "packnet", "seed": 0, "tasks": tasks,
            "model": {"pretrained": {"hf": str(bert)}, "targets": ["query", "value"], "finetune_lr_scale": 1.0},
            "scheme": {"kind": "mann", "keep": keep, "round_steps": 10},
            "train": {"steps": steps, "eval_every": 5, "batch_size": 16, "lr": 0.003, "device": "cpu"}}



@pytest.fixture(scope="module")
def packed(bert, tmp_path_factory):
    return open_run(train(parse_config(packnet_config(bert)), tmp_path_factory.mktemp("runs"), quiet=True))


def test_tasks_own_disjoint_shares_and_see_the_earlier_ones(packed, bert):
    masks = {name: torch.from_numpy(m) for name, m in packed.masks().items()}
    assert len(masks) == 4  # query and value of 2 layers
    for m in masks.values():
        first, second = m[0], m[1]
        assert torch.equal(first & second, first)  # nested: the second task sees what the first owns
        assert first.float().mean().item() == pytest.approx(0.3, abs=0.01)  # each owns 30% of every target
        assert (second & ~first).float().mean().item() == pytest.approx(0.3, abs=0.01)
    stored = load_file(str(packed.path / "model.safetensors"))
    pretrained = load_file(str(bert / "model.safetensors"))
    for name, m in masks.items():
        delta = stored["body.deltas." + name.replace(".", "__")]
        assert torch.all(delta[~m[1]] == 0) and delta[m[1]].abs().sum() > 0  # the free: pretrained values again
        assert pretrained[name].shape == delta.shape
    report = packed.summary()["search"]["packnet"]
    assert [round(r["free_before"], 2) for r in report.values()] == [1.0, 0.7]
    assert [round(r["density"], 2) for r in report.values()] == [0.3, 0.6]
    metrics = packed.summary()["metrics"]  # packing the second task left the first one's dev metric exactly as it was
    assert all(report[task]["dev"] == metrics[task]["dev"] for task in ("cat", "parity"))


def test_a_task_added_later_leaves_the_earlier_ones_bit_identical(packed, tmp_path):
    new = TaskConfig(name="dog", source="tiny_models:sentences", args={"target": "has_dog", "seed": 2})
    child = open_run(finetune(packed, FinetunePlan(10, "new", [new]), tmp_path))
    old, grown = packed.load_model().eval(), child.load_model().eval()
    ids = torch.tensor([[2, 5, 6, 7, 3, 0], [2, 8, 25, 3, 0, 0]])
    with torch.no_grad():
        for t in range(2):
            assert torch.equal(old.forward_tasks(ids, [t])[0], grown.forward_tasks(ids, [t])[0])
    masks = {name: torch.from_numpy(m) for name, m in child.masks().items()}
    for m in masks.values():
        owned = m[2] & ~m[1]
        assert torch.equal(m[2] & m[1], m[1]) and owned.float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert child.summary()["search"]["packnet"]["dog"]["free_before"] == pytest.approx(0.4, abs=0.01)


def test_packing_alone_is_the_paper_s_network_and_training_moves_only_a_task_s_own_weights(bert, tmp_path):
    joint = open_run(train(parse_config(packnet_config(bert, steps=10)), tmp_path, quiet=True))
    model = joint.load_model()
    owned = model.body.owned(1)
    first = model.body.task_masks(0)
    assert all(not (owned[n] & first[n]).any() for n in owned)  # the second task owns none of the first's
    update = model.body.update_masks(1)
    assert all(torch.equal(update[f"deltas.{n.replace('.', '__')}"], owned[n]) for n in owned)


def test_a_share_that_leaves_a_task_nothing_free_is_refused_in_one_line(bert, tmp_path, capsys):
    tasks = [*SENTENCE_TASKS, {"name": "dog", "source": "tiny_models:sentences", "args": {"target": "has_dog"}}]
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(packnet_config(bert, tasks, keep=0.4)))
    assert main(["train", str(path), "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "task dog would find 20% of the weights free, not 40%" in error, error
    runs = tmp_path / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if p.name != DATA_CACHE]
    with pytest.raises(ConfigError, match="task dog would find 20% of the weights free"):
        parse_config(packnet_config(bert, tasks, keep=0.4))
