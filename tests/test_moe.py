import json

import pytest
import torch

from helpers import tiny_config
from lsmn_core.network.layers import block_branch
from lsmn_core.data.loading import load_tasks
from lsmn_core.errors import ConfigError, RoutingError
from lsmn_core.training.evaluation import evaluate_run
from lsmn_core.schemes import build_model
from lsmn_core.schemes.moe.gates import cv_squared, specialisation
from lsmn_core.store.runs import open_run
from lsmn_core.data.tasks import task_loss
from lsmn_core.training.trainer import BatchLoss, train

MOE = {"kind": "moe", "experts": 4, "top_k": 2}


@pytest.fixture(scope="module")
def specs():
    config = tiny_config()
    return [d.spec for d in load_tasks(config.tasks, config.data)]


def moe_body(specs, **options):
    body = build_model(specs, tiny_config(scheme={**MOE, **options})).body
    with torch.no_grad():
        body.w_gate.normal_(0, 1.0)  # break the zero-initialised gates' ties
        body.w_noise.normal_(0, 0.1)
    return body


def test_gates_pick_exactly_k_allowed_experts_and_sum_to_one(specs):
    body = moe_body(specs).train()
    body.allowed[1, 0, 3] = False
    h = torch.randn(40, 32)
    rows_task = torch.tensor([0] * 20 + [1] * 20)
    gates, aux = body.gate(h, rows_task, 0)
    assert ((gates > 0).sum(-1) == 2).all()
    assert torch.allclose(gates.sum(-1), torch.ones(40))
    assert (gates[20:, 3] == 0).all() and aux > 0 and torch.isfinite(aux)
    body.allowed[1, 0] = torch.tensor([True, False, False, False])  # fewer allowed experts than k
    gates, aux = body.gate(h, rows_task, 0)
    assert (gates[20:, 0] == 1).all() and (gates[20:, 1:] == 0).all() and torch.isfinite(aux)


def test_dispatch_equals_the_dense_mixture_of_experts(specs):
    body = moe_body(specs).eval()
    h = torch.randn(2, 6, 32)
    tasks = torch.tensor([0, 2])
    out = body(h, tasks)
    x = h.reshape(12, 32)
    rows_task = tasks.repeat_interleave(6)
    for layer in range(body.depth):
        gates, _ = body.gate(x, rows_task, layer)
        experts = body.experts[layer]
        dense = sum(gates[:, e : e + 1] * block_branch(x.unsqueeze(0), {n: p[e : e + 1] for n, p in experts.items()})[0]
                    for e in range(4))
        x = x + dense
    assert torch.allclose(out.reshape(12, 32), x, atol=1e-5)


@pytest.mark.parametrize("capacity_factor", [0.0, 0.5])
def test_every_expert_on_every_row_equals_the_routed_update_with_gradients(specs, capacity_factor, monkeypatch):
    """The GPU's way (every expert on every row, gated; no nonzero to wait for) computes what the
    CPU's routed way computes: the update and the gradients of input, experts and gate, also with
    assignments dropped at the capacity limit."""
    body = moe_body(specs, capacity_factor=capacity_factor).train()
    h = torch.randn(3, 8, 32, requires_grad=True)
    tasks = torch.tensor([0, 2, 1])
    results = []
    for way in (body.routed_update, body.every_expert_update):
        monkeypatch.setattr(body, "routed_update", way)  # the CPU's choice, here either way
        torch.manual_seed(0)  # the same gate noise
        body.zero_grad()
        h.grad = None
        out = body.layer_update(h, tasks, 1)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append([out.detach(), h.grad.clone(), body.w_gate.grad.clone()]
                       + [p.grad.clone() for p in body.experts[1].values()])
    for routed, every in zip(*results):
        assert torch.allclose(routed, every, atol=1e-5)
    assert results[0][0].abs().sum() > 0


def test_balancing_losses_are_squared_coefficients_of_variation(specs):
    assert cv_squared(torch.tensor([3.0, 3.0, 3.0])) == 0
    assert cv_squared(torch.tensor([6.0, 0.0, 0.0])) == pytest.approx(3.0)
    body = moe_body(specs).train()
    _, aux = body.gate(torch.randn(64, 32), torch.zeros(64, dtype=torch.long), 1)
    aux.backward()
    assert body.w_noise.grad.abs().sum() > 0  # the smooth load estimator reaches the noise weights
    assert body.w_gate.grad.abs().sum() > 0


def test_capacity_limit_drops_what_an_expert_cannot_take(specs):
    body = moe_body(specs, capacity_factor=0.5).eval()
    gates, _ = body.gate(torch.randn(40, 32), torch.zeros(40, dtype=torch.long), 0)
    dropped = body._limit_capacity(gates)
    capacity = 10  # ceil(0.5 * 40 * 2 / 4)
    assert ((gates > 0).sum(0) <= capacity).all()
    assert dropped.sum() == 80 - (gates > 0).sum()


def test_top_k_above_experts_is_a_config_error(specs):
    with pytest.raises(ConfigError, match="top_k"):
        build_model(specs, tiny_config(scheme={"kind": "moe", "experts": 2, "top_k": 3}))


@pytest.fixture(scope="module")
def moe_run(tmp_path_factory):
    config = tiny_config(scheme=MOE, train={"steps": 120, "batch_size": 32, "eval_every": 60, "device": "cpu"})
    return open_run(train(config, tmp_path_factory.mktemp("moe"), quiet=True))


def test_gate_statistics_are_stored_per_task_and_layer(moe_run):
    doc, _ = moe_run.routing()
    stats = doc["gate_stats"]
    assert set(stats) == {"digit", "parity", "position"}
    for task in stats.values():
        assert len(task["usage"]) == 2 and len(task["usage"][0]) == 4
        assert all(sum(layer) == pytest.approx(2.0) for layer in task["usage"])  # k experts per sample
        assert all(0 <= e <= 0.7 for e in task["entropy"]) and task["overflow"] == [0.0, 0.0]


def test_restricting_experts_changes_only_that_task(moe_run):
    doc, _ = moe_run.routing()
    allowed = {t: [[True] * 4 for _ in range(2)] for t in doc["tasks"]}
    allowed["digit"] = [[True, False, False, False], [False, True, True, False]]
    result = evaluate_run(moe_run, {**doc, "allowed": allowed}, device="cpu")
    assert result["metrics"]["parity"]["test_delta"] == pytest.approx(0, abs=1e-9)
    assert result["metrics"]["digit"]["test_delta"] != 0
    model = moe_run.load_model()
    assert model.body.allowed.all()  # the stored run is unchanged


@pytest.mark.parametrize("digit, message", [
    ([[False] * 4, [True] * 4], "at least one expert"),
    ([[True] * 4], "expected 2 layers x 4"),
    ([[1, 0, 0, 0], [1, 1, 1, 1]], "true/false"),
])
def test_invalid_expert_restrictions_are_refused(moe_run, digit, message):
    doc, _ = moe_run.routing()
    allowed = {t: [[True] * 4 for _ in range(2)] for t in doc["tasks"]}
    allowed["digit"] = digit
    with pytest.raises(RoutingError, match=message):
        evaluate_run(moe_run, {**doc, "allowed": allowed}, device="cpu")
    json.dumps(doc)  # the document itself stays plain JSON


@pytest.mark.parametrize("batch_sizes", [(16, 16, 16), (16, 8, 16)])  # one forward for all tasks, or one per task
def test_the_balance_losses_count_once_per_forward_not_once_per_task(specs, batch_sizes):
    model = build_model(specs, tiny_config(scheme={**MOE, "noisy": False})).train()
    with torch.no_grad():
        for layer in model.body.w_gate:
            layer.normal_(0, 1.0)
    generator = torch.Generator().manual_seed(0)
    tasks = [0, 1, 2]
    batches = [(torch.rand(n, *specs[t].input_shape, generator=generator),
                torch.randint(specs[t].n_outputs, (n,), generator=generator), 1.0) for t, n in zip(tasks, batch_sizes)]
    loss = BatchLoss(model, specs)(tasks, batches)
    if len(set(batch_sizes)) == 1:
        outputs = model.forward_tasks(torch.stack([x for x, _, _ in batches]), tasks)
        auxiliary = model.body.aux_loss
    else:
        outputs, auxiliary = [], 0.0
        for t, (x, _, _) in zip(tasks, batches):
            outputs.append(model(x, t))
            auxiliary = auxiliary + model.body.aux_loss
    expected = sum(task_loss(specs[t], out, y) for t, out, (_, y, _) in zip(tasks, outputs, batches)) + auxiliary
    assert float(auxiliary) > 1e-4  # the gates are unbalanced, so counting it once or thrice differs
    assert torch.allclose(loss, expected, rtol=1e-6)


def test_specialisation_is_zero_for_shared_experts_and_one_for_experts_of_their_own():
    def stats(*rows):  # one layer per task: its share of samples per expert
        return {f"task{i}": {"usage": [row]} for i, row in enumerate(rows)}
    assert specialisation(stats([0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5])) == [pytest.approx(0.0)]
    assert specialisation(stats([1, 0, 0], [0, 1, 0], [0, 0, 1])) == [pytest.approx(1.0)]
    assert specialisation(stats([1, 0], [1, 0])) == [0.0]  # one expert for all: nothing to tell tasks apart
    # two tasks, top-2 of 4 experts, disjoint pairs: I = log 2, H(T) = log 2, H(E) = log 4
    assert specialisation(stats([1, 1, 0, 0], [0, 0, 1, 1])) == [pytest.approx(2 / 3)]
    partly = specialisation(stats([1, 1, 0, 0], [0, 1, 1, 0]))[0]
    assert 0 < partly < 2 / 3


def test_a_task_level_gate_sees_no_sample_and_sends_all_of_a_task_s_samples_to_the_same_experts(specs):
    body = build_model(specs, tiny_config(scheme={**MOE, "gate_input": "task"})).body.eval()
    assert body.w_gate.numel() == 0 and body.w_noise.numel() == 0
    with torch.no_grad():
        body.gate_bias.normal_(0, 1.0)
    out = body(torch.randn(3, 10, 32), torch.tensor([0, 1, 2]))
    assert torch.isfinite(out).all()
    usage = body.stats_usage / body.stats_samples[..., None]
    assert ((usage == 0) | (usage == 1)).all() and (usage.sum(-1) == 2).all()  # k experts, the same for every sample
    with pytest.raises(ConfigError, match="task_gate"):
        build_model(specs, tiny_config(scheme={**MOE, "gate_input": "task", "task_gate": False}))


def test_a_trained_run_reports_its_specialisation_per_layer(moe_run, tmp_path):
    summary = moe_run.summary()["routing"]
    assert summary["specialisation"] == pytest.approx(specialisation(summary["gate_stats"]))
    assert len(summary["specialisation"]) == 2 and all(0 <= v <= 1 for v in summary["specialisation"])
    config = tiny_config(scheme={**MOE, "gate_input": "task"},
                         train={"steps": 120, "batch_size": 32, "eval_every": 60, "device": "cpu"})
    task_level = open_run(train(config, tmp_path, quiet=True)).summary()["routing"]
    for stats in task_level["gate_stats"].values():
        assert all(sorted(layer) == [0, 0, 1, 1] for layer in stats["usage"])  # each task keeps to its k experts


def test_the_moe_study_tables_accuracy_and_specialisation_per_gate_input(tmp_path):
    import yaml

    from helpers import TINY
    from lsmn.studies import moe_study

    (tmp_path / "digits.yaml").write_text(yaml.safe_dump(
        {**TINY, "train": {"steps": 30, "batch_size": 16, "eval_every": 30, "device": "cpu"}}))
    table = moe_study(seeds=(0,), configs=tmp_path).splitlines()
    assert table[0].startswith("| gate sees | `digit` test accuracy | `parity` test accuracy | `position` test")
    assert table[0].endswith("specialisation, layer 0 | specialisation, layer 1 |")
    assert [row.split(" | ")[0] for row in table[2:]] == ["| sample", "| sample + task offset", "| task"]
    assert all(len(row.split(" | ")) == 6 for row in table[2:])
