"""Polytropon (mixture on a checkpoint): K LoRA skills per target, a task-by-skill allocation per
layer. A task's network is one LoRA adapter mixed from the skills by its allocation (checked by
loading that adapter into peft); the allocation is sampled in training and deterministic in
evaluation; it is the run's signature (shown, edited, refused when malformed); a new task transfers
by learning its allocation alone, the skills and the old tasks untouched."""

import json

import peft
import pytest
import torch

from lsmn.cli import main
from lsmn_core.config import TaskConfig, parse_config
from lsmn_core.errors import ConfigError, RoutingError
from lsmn_core.schemes.mixture.polytropon import PolytroponSkills
from lsmn_core.store import routing
from lsmn_core.store.runs import open_run
from lsmn_core.training.finetune import FinetunePlan, finetune
from lsmn_core.training.trainer import train
from tiny_models import SENTENCE_TASKS, TOKEN_IDS


IDS = torch.tensor(TOKEN_IDS)


def poly_config(bert, **scheme) -> dict:
    return {"name": "poly", "seed": 0, "tasks": SENTENCE_TASKS,
            "model": {"pretrained": {"hf": str(bert)}, "targets": ["query", "value"]},
            "scheme": {"kind": "mixture", "templates": 3, "adapter": {"lora": {"rank": 2, "alpha": 4}}, **scheme},
            "train": {"steps": 30, "eval_every": 15, "batch_size": 16, "lr": 0.003, "device": "cpu"}}



@pytest.fixture(scope="module")
def poly(bert, tmp_path_factory):
    return open_run(train(parse_config(poly_config(bert)), tmp_path_factory.mktemp("runs"), quiet=True))


def test_a_task_s_network_is_one_lora_adapter_mixed_from_the_skills(poly, bert):
    from transformers import AutoModel

    model = poly.load_model().eval()
    body = model.body
    assert isinstance(body, PolytroponSkills) and body.xi.shape == (2, 2, 3)
    z = torch.sigmoid(body.xi.detach())
    z = z / z.sum(-1, keepdim=True)
    assert torch.allclose(z, body.mixture_weights(), atol=1e-6)
    state = {}
    for name, layer in body.target_layers.items():
        key, module = name.replace(".", "__"), name.removesuffix(".weight")
        mixed_a = torch.einsum("k,krn->rn", z[1, layer], body.lora_A[key].detach())
        mixed_b = torch.einsum("k,kor->or", z[1, layer], body.lora_B[key].detach())
        state[f"base_model.model.{module}.lora_A.weight"] = mixed_a
        state[f"base_model.model.{module}.lora_B.weight"] = mixed_b
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"])
    adapted = peft.get_peft_model(AutoModel.from_pretrained(bert, local_files_only=True), config).eval()
    peft.set_peft_model_state_dict(adapted, state)
    with torch.no_grad():
        theirs = adapted(input_ids=IDS, attention_mask=(IDS != 0).long()).last_hidden_state
        assert torch.allclose(model.features(IDS, 1)[0], theirs, atol=1e-5)
        assert not torch.allclose(model.features(IDS, 0)[0], theirs, atol=1e-4)  # another allocation
    shapes = {k: list(v.shape) for k, v in model.body.state_dict().items()}
    assert shapes["lora_A.encoder__layer__0__attention__self__query__weight"] == [3, 2, 32]
    assert shapes["lora_B.encoder__layer__0__attention__self__query__weight"] == [3, 32, 2]


def test_the_allocation_is_sampled_in_training_and_fixed_in_evaluation(poly):
    body = poly.load_model().body
    body.train()
    assert not torch.equal(body.allocation(0), body.allocation(0))
    assert torch.allclose(body.allocation(0).sum(-1), torch.ones(2))
    body.eval()
    assert torch.equal(body.allocation(0), body.allocation(0))


def test_every_task_s_rows_run_through_the_checkpoint_at_once_as_each_task_s_network_would(poly):
    """forward_tasks on a batch per task runs the checkpoint once on all rows, each row through its
    task's mixed skills as activations; outputs and gradients match each task run with its own weights."""
    model = poly.load_model().eval()
    other = torch.tensor([[2, 9, 3, 0, 0, 0], [2, 5, 5, 5, 7, 3]])
    x = torch.stack([IDS, other])  # [tasks, rows, L], padded differently per row
    assert model.features_together(x, [0, 1]) is not None

    def step(outputs):
        model.zero_grad()
        sum(out.pow(2).sum() for out in outputs).backward()
        return [p.grad.clone() for p in model.body.parameters() if p.grad is not None]

    together = model.forward_tasks(x, [0, 1])
    in_turn = [model.heads[model.specs[t].name](*model.features(x[t], t)) for t in range(2)]
    for a, b in zip(together, in_turn):
        assert torch.allclose(a, b, atol=1e-5)
    grads_together, grads_in_turn = step(together), step(in_turn)
    assert len(grads_together) == 2 * 4 + 1  # the skills' A and B of 4 targets, and the allocations
    for a, b in zip(grads_together, grads_in_turn):
        assert torch.allclose(a, b, atol=1e-5) and a.abs().sum() > 0
    assert not torch.allclose(model.forward_tasks(x[[0, 0]], [0, 1])[1], in_turn[1], atol=1e-3)  # rows go with tasks


def test_the_allocation_is_the_signature_shown_and_edited(poly, tmp_path, capsys):
    doc, arrays = routing.read(poly.path / "routing.json")
    weights = doc["signatures"]["cat"]
    assert len(weights) == 2 and all(abs(sum(row) - 1) < 1e-5 for row in weights)
    assert main(["show", str(poly.path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert set(shown["routing"]["signatures"]) == {"cat", "parity"}
    model = poly.load_model().eval()
    edited = {**doc, "signatures": {**doc["signatures"], "cat": [2, 0]}}
    routing.apply(model, routing.decode(edited, arrays, model))
    allocation = model.body.mixture_weights()[0]
    assert allocation[0].argmax().item() == 2 and allocation[1].argmax().item() == 0
    assert allocation.max(-1).values.min().item() > 0.9999  # a module order: near one-hot
    for bad, message in (([[0.5, 0.5, 0.0]], "expected 2 layers x 3 templates"),
                         ([[float("nan"), 0.5, 0.5], [1, 0, 0]], "finite and non-negative"),
                         ([3, 0], "template indices in 0..2")):
        with pytest.raises(RoutingError, match=message):
            routing.decode({**doc, "signatures": {**doc["signatures"], "cat": bad}}, arrays, model)


def test_a_new_task_transfers_by_learning_its_allocation_alone(poly, tmp_path):
    new = TaskConfig(name="dog", source="tiny_models:sentences", args={"target": "has_dog", "seed": 2})
    child = open_run(finetune(poly, FinetunePlan(20, "routing", [new]), tmp_path))
    old, grown = poly.load_model().eval(), child.load_model().eval()
    before, after = old.body.state_dict(), grown.body.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("lora_"))  # the skills untouched
    assert torch.equal(before["xi"], after["xi"][:2]) and not torch.equal(after["xi"][2], grown.body.xi[0].detach())
    with torch.no_grad():
        for t in range(2):
            assert torch.equal(old.forward_tasks(IDS, [t])[0], grown.forward_tasks(IDS, [t])[0])
    assert child.summary()["finetune"]["trainable_besides_heads"] == 2 * 3  # its allocation: 2 layers x 3 skills


def test_bad_skills_are_refused_in_one_line(bert):
    with pytest.raises(ConfigError, match="scheme.templates: must be in 1 .. 4,096; got 0"):
        parse_config(poly_config(bert, templates=0))
    with pytest.raises(ConfigError, match="scheme.adapter: LoRA skills are for a pretrained network"):
        parse_config({"name": "x", "tasks": [{"name": "digit", "dataset": "digits", "target": "digit"}],
                      "scheme": {"kind": "mixture", "adapter": {"lora": {"rank": 2}}}})
    with pytest.raises(ConfigError, match="scheme.mix_norm: not on a pretrained network"):
        parse_config(poly_config(bert, mix_norm=False))
