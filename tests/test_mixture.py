import json

import numpy as np
import pytest
import torch

from lsmn_core.schemes.mixture.signatures import (is_progressive, pair_sharing, runs, shared_layers, signature_report,
                                                 similarity)
from helpers import tiny_config
from lsmn_core.store import routing
from lsmn_core.network.layers import residual_block
from lsmn_core.config import TaskConfig
from lsmn_core.data.loading import load_tasks
from lsmn_core.errors import RoutingError
from lsmn_core.training.evaluation import evaluate_run
from lsmn_core.training.finetune import FinetunePlan, finetune
from lsmn_core.schemes import build_model, check_model_size
from lsmn_core.schemes.mixture import hand_designed_order, one_hot_logits
from lsmn_core.store.runs import open_run
from lsmn_core.training.trainer import train

MIXTURE = {"kind": "mixture", "templates": 3, "entropy_weight": 0.01}


def mixture_config(**scheme):
    return tiny_config(model={"width": 32, "depth": 4}, scheme={**MIXTURE, **scheme},
                       train={"steps": 150, "batch_size": 32, "eval_every": 50, "device": "cpu"})


@pytest.fixture(scope="module")
def specs():
    config = mixture_config()
    return [d.spec for d in load_tasks(config.tasks, config.data)]


@pytest.fixture(scope="module")
def mixture_run(tmp_path_factory):
    return open_run(train(mixture_config(), tmp_path_factory.mktemp("mix"), quiet=True))


@pytest.mark.parametrize("mix_norm", [True, False])
def test_one_hot_signature_computes_exactly_the_chosen_template(specs, mix_norm):
    model = build_model(specs, mixture_config(mix_norm=mix_norm))
    body = model.body
    with torch.no_grad():
        body.xi[1] = one_hot_logits([2, 0, 1, 2], 3)
    x = torch.randn(1, 5, 32)
    for layer, k in enumerate([2, 0, 1, 2]):
        mixed = body.block_params(layer, torch.tensor([1]))
        for name, theta in body.templates.items():
            assert torch.equal(mixed[name][0], theta[k])
        template = {name: theta[k].unsqueeze(0) for name, theta in body.templates.items()}
        if not mix_norm:
            template.update({n: p[1, layer].unsqueeze(0) for n, p in body.norms.items()})
        assert torch.equal(residual_block(x, mixed), residual_block(x, template))


def test_soft_signature_mixes_every_parameter(specs):
    body = build_model(specs, mixture_config()).body
    weights = torch.softmax(body.xi[0, 2], -1)
    mixed = body.block_params(2, torch.tensor([0]))
    for name, theta in body.templates.items():
        assert torch.allclose(mixed[name][0], sum(weights[k] * theta[k] for k in range(3)), atol=1e-6)


def test_hand_designed_signatures_follow_the_paper():
    assert hand_designed_order("sequential", 8, 4) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert hand_designed_order("cyclic", 8, 4) == [0, 1, 2, 3, 0, 1, 2, 3]
    torch.manual_seed(0)
    first = hand_designed_order("random", 8, 4)
    torch.manual_seed(0)
    assert first == hand_designed_order("random", 8, 4) and all(0 <= k < 4 for k in first)


def test_hand_designed_signatures_stay_fixed_during_training(tmp_path):
    run = open_run(train(mixture_config(signature="cyclic"), tmp_path, quiet=True))
    doc, _ = run.routing()
    for weights in doc["signatures"].values():
        assert np.array_equal(np.asarray(weights), np.eye(3)[[0, 1, 2, 0]])
    assert run.summary()["routing"]["signatures"]["digit"] == [0, 1, 2, 0]


def test_entropy_penalty_is_zero_for_one_hot_and_pulls_towards_it(specs):
    body = build_model(specs, mixture_config(entropy_weight=1.0)).body
    uniform = body.penalty(0)
    assert uniform.item() == pytest.approx(np.log(3), abs=0.01)
    with torch.no_grad():
        body.xi[1] = one_hot_logits([0, 1, 2, 0], 3)
    assert body.penalty(1).item() == pytest.approx(0.0, abs=1e-9)
    with torch.no_grad():
        body.xi[0] = torch.tensor([0.3, 0.0, -0.2])
    optimizer = torch.optim.SGD([body.xi], lr=0.5)
    start = body.penalty(0).item()
    for _ in range(20):
        optimizer.zero_grad()
        body.penalty(0).backward()
        optimizer.step()
    assert body.penalty(0).item() < start and torch.softmax(body.xi[0], -1).max() > 0.5


def test_routing_document_round_trip(mixture_run):
    model = mixture_run.load_model()
    doc, arrays = routing.encode(model)
    assert set(doc["signatures"]) == set(model.task_names)
    assert np.allclose(np.asarray(doc["signatures"]["digit"]).sum(-1), 1)
    fresh = build_model(model.specs, mixture_run.config())
    fresh.load_state_dict(model.state_dict())
    routing.apply(fresh, routing.decode(json.loads(json.dumps(doc)), arrays, fresh))
    x = torch.rand(4, 8, 8)
    for a, b in zip(model.forward_tasks(x), fresh.forward_tasks(x)):
        assert torch.allclose(a, b, atol=1e-6)


def test_evaluating_a_reordered_signature(mixture_run):
    doc, _ = mixture_run.routing()
    edited = {**doc, "signatures": {**doc["signatures"], "digit": [2, 2, 1, 0]}}
    result = evaluate_run(mixture_run, edited, device="cpu")
    assert result["metrics"]["parity"]["test_delta"] == pytest.approx(0, abs=1e-9)
    assert result["metrics"]["digit"]["test_delta"] != 0
    assert json.loads((mixture_run.path / "routing.json").read_text())["signatures"] == doc["signatures"]


@pytest.mark.parametrize("signature, message", [
    ([0, 1, 3, 0], "template indices in 0..2"),
    ([0, 1], "template indices in 0..2"),
    ([[1, 0, 0]] * 3, "expected 4 layers x 3 templates"),
    ([[0.5, 0.6, -0.1]] * 4, "finite and non-negative"),
    ([[0.5, 0.4, 0.0]] * 4, "must sum to 1"),
    ([[float("nan"), 0.5, 0.5]] * 4, "finite and non-negative"),
    ("fast", "expected numbers"),
])
def test_invalid_signatures_are_refused(mixture_run, signature, message):
    doc, _ = mixture_run.routing()
    edited = {**doc, "signatures": {**doc["signatures"], "digit": signature}}
    with pytest.raises(RoutingError, match=message):
        evaluate_run(mixture_run, edited, device="cpu")
    with pytest.raises(RoutingError, match="signatures"):
        evaluate_run(mixture_run, {**doc, "signatures": {"digit": doc["signatures"]["digit"]}}, device="cpu")


def test_finetuning_signatures_keeps_templates_frozen(mixture_run, tmp_path):
    child = open_run(finetune(mixture_run, FinetunePlan(40, "routing"), tmp_path))
    assert child.meta["parent"] == mixture_run.id and child.status == "done"
    parent_state, child_state = mixture_run.load_model().state_dict(), child.load_model().state_dict()
    for name, value in parent_state.items():
        if name != "body.xi":
            assert torch.equal(value, child_state[name]), name
    assert not torch.equal(parent_state["body.xi"], child_state["body.xi"])
    assert child.summary()["finetune"]["trainable_besides_heads"] == 3 * 4 * 3  # T x L x K signature weights


def test_transfer_by_signature_alone_leaves_old_tasks_bit_identical(mixture_run, tmp_path):
    new = TaskConfig(name="mod3", dataset="digits", target="mod3")
    child = open_run(finetune(mixture_run, FinetunePlan(60, "routing", [new], init_from="parity"), tmp_path))
    assert child.task_names == ["digit", "parity", "position", "mod3"]
    counts = child.summary()["finetune"]
    assert counts["trainable_besides_heads"] == 4 * 3 <= 500  # one task's L x K signature
    x = torch.rand(6, 8, 8)
    old, new_model = mixture_run.load_model(), child.load_model()
    for t in range(3):
        assert torch.equal(old(x, t), new_model(x, t))
    assert child.summary()["metrics"]["mod3"]["test"] > 1 / 3  # better than chance on 3 classes
    full = open_run(finetune(mixture_run, FinetunePlan(20, "all", [new]), tmp_path))
    assert full.summary()["finetune"]["trainable_besides_heads"] > 10_000


def test_finetune_rejects_bad_requests(mixture_run, sparse_run, tmp_path):
    from lsmn_core.errors import ConfigError

    with pytest.raises(ConfigError, match="already in the run"):
        finetune(mixture_run, FinetunePlan(5, "routing", [TaskConfig(name="digit", dataset="digits", target="digit")]))
    with pytest.raises(ConfigError, match="no task 'nope'"):
        finetune(mixture_run, FinetunePlan(5, "routing", [TaskConfig(name="m", dataset="digits", target="mod3")],
                                           "nope"))
    with pytest.raises(ConfigError, match="has no trainable routing"):
        finetune(open_run(sparse_run), FinetunePlan(5, "routing"), tmp_path)


def test_signature_analysis():
    assert runs([1, 2, 2, 3, 3, 3]) == [(1, 1), (2, 2), (3, 3)]
    assert is_progressive([1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4])  # the paper's example signature
    assert not is_progressive([0, 1, 0, 1])  # cyclic: templates come back
    assert not is_progressive([2, 2, 2, 1])  # runs shrink
    assert not is_progressive([3, 3, 3, 3])  # one run only
    eye = np.eye(3)
    signatures = {"a": eye[[0, 0, 1, 2]], "b": eye[[0, 0, 2, 2]], "c": np.full((4, 3), 1 / 3)}
    sim = similarity(signatures)
    assert sim[0, 1] == pytest.approx(0.75) and sim[0, 0] == 1 and sim[0, 2] == pytest.approx(1 / 3)
    layers = shared_layers(signatures)
    assert layers[0]["groups"] == {0: ["a", "b", "c"]} and layers[0]["shared_by_all"]
    assert layers[2]["groups"] == {1: ["a"], 2: ["b"], 0: ["c"]}
    report = signature_report(signatures)
    assert report["tasks"]["c"]["entropy"][0] == pytest.approx(np.log(3))
    assert report["tasks"]["a"]["confidence"] == [1.0] * 4 and report["tasks"]["a"]["order"] == [0, 0, 1, 2]


def test_cli_shows_signatures_and_evaluates_a_module_order(mixture_run, tmp_path):
    import subprocess
    import sys

    from helpers import REPO

    shown = subprocess.run([sys.executable, "-m", "lsmn", "show", str(mixture_run.path), "--json"],
                           capture_output=True, text=True, cwd=REPO)
    data = json.loads(shown.stdout)
    assert set(data["routing"]["signatures"]) == set(mixture_run.task_names) and "overlap" not in data
    doc, _ = mixture_run.routing()
    doc["signatures"]["parity"] = [0, 0, 0, 0]
    (tmp_path / "routing.json").write_text(json.dumps(doc))  # signatures need no tensor file beside it
    result = subprocess.run([sys.executable, "-m", "lsmn", "eval", str(mixture_run.path), "--routing",
                             str(tmp_path / "routing.json"), "--json"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["metrics"]["digit"]["test_delta"] == pytest.approx(0, abs=1e-9)


def test_transfer_with_per_task_norms(tmp_path):
    parent = open_run(train(mixture_config(mix_norm=False), tmp_path, quiet=True))
    new = TaskConfig(name="mod3", dataset="digits", target="mod3")
    child = open_run(finetune(parent, FinetunePlan(30, "routing", [new], "digit", with_norms=True), tmp_path))
    width, depth, templates = 32, 4, 3
    assert child.summary()["finetune"]["trainable_besides_heads"] == depth * templates + 2 * depth * width
    x = torch.rand(5, 8, 8)
    old, grown = parent.load_model(), child.load_model()
    assert all(torch.equal(old(x, t), grown(x, t)) for t in range(3))
    from lsmn_core.errors import ConfigError

    mixed_norms = open_run(train(mixture_config(), tmp_path, quiet=True))
    with pytest.raises(ConfigError, match="no per-task norm parameters"):
        finetune(mixed_norms, FinetunePlan(5, "routing", [new], with_norms=True), tmp_path)


def test_pair_sharing_counts_equal_templates_of_pairs_with_one_label():
    one_hot = np.eye(3)
    signatures = {"a_x": one_hot[[0, 1, 2]], "b_x": one_hot[[0, 2, 2]], "a_y": one_hot[[1, 1, 2]]}
    domain = {"a_x": "x", "b_x": "x", "a_y": "y"}
    target = {"a_x": "a", "b_x": "b", "a_y": "a"}
    assert pair_sharing(signatures, domain, range(0, 2)) == 0.5  # a_x, b_x: layer 0 equal, layer 1 not
    assert pair_sharing(signatures, target, range(0, 2)) == 0.5  # a_x, a_y: layer 1 equal
    assert pair_sharing(signatures, target, range(2, 3)) == 1.0


def test_a_random_signature_model_builds_on_the_meta_device_as_readers_build_it():
    config = tiny_config(scheme={"kind": "mixture", "templates": 3, "signature": "random"})
    specs = [d.spec for d in load_tasks(config.tasks, config.data)]
    with torch.device("meta"):
        model = build_model(specs, config)
    assert model.body.xi.is_meta and check_model_size(specs, config, 16, "train") > 0
