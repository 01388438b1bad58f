"""The hyper scheme (MUiR): blocks from hypermodules, soft-merged candidates, the alignment search,
routing round trips and edits, per-task architectures or a body of blocks, and the sharing analysis."""

import json

import numpy as np
import pytest
import torch

from analysis.sharing_graph import (adjusted_rand_index, cluster_labels, sharing_graph, subset_proportions, task_graph,
                                    usage_counts)
from helpers import REPO
from lsmn.cli import main
from lsmn.studies import seed_config, least_squares_rmse, undetermined_rmse
from lsmn_core.store import routing
from lsmn_core.config import load_config, parse_config
from lsmn_core.data.loading import load_tasks
from lsmn_core.errors import ConfigError, RoutingError
from lsmn_core.training.evaluation import evaluate_run
from lsmn_core.schemes import build_model
from lsmn_core.schemes.hyper.search import sample_challengers
from lsmn_core.schemes.hyper.body import HyperBody
from lsmn_core.store.runs import open_run
from lsmn_core.training.trainer import train


def mixed_config(**scheme):
    """Three tasks of three architectures (2-D conv, MLP, linear) sharing one hypermodule pool."""
    return parse_config({
        "name": "mixed", "seed": 1,
        "tasks": [{"name": "digit", "dataset": "digits", "target": "digit", "architecture": "conv"},
                  {"name": "parity", "dataset": "digits", "target": "parity", "architecture": "mlp"},
                  {"name": "kang", "dataset": "kang_synthetic", "target": "0", "architecture": "mlp"}],
        "model": {"width": 16, "depth": 1},
        "scheme": {"kind": "hyper", "block": [8, 8], "context": 2, "hypermodules": 6, "generations": 2,
                   "generation_steps": 10, **scheme},
        "train": {"steps": 30, "batch_size": 16, "eval_every": 15, "device": "cpu"},
    })


@pytest.fixture(scope="module")
def specs():
    return [d.spec for d in load_tasks(mixed_config().tasks, mixed_config().data)]


def test_every_block_is_its_hypermodule_times_its_context(specs):
    body = build_model(specs, mixed_config()).body
    m, n = body.options.block
    for t in range(3):
        params = body.task_params([t])
        for i, slot in enumerate(body.slots[t]):
            if slot is None:
                continue
            weight = params[i][0][0]  # [out, in, *kernel]
            out, inp, *kernel = weight.shape
            first = body.task_start[t] + slot[0]
            per_position = weight.reshape(out, inp, -1)
            for loc in range(slot[1]):  # location order: kernel position, row block, column block
                position, rest = divmod(loc, (out // m) * (inp // n))
                row, col = divmod(rest, inp // n)
                expected = body.hypermodules[body.alignment[first + loc]] @ body.contexts[first + loc]
                expected = expected * body.gain[first + loc]
                block = per_position[row * m:(row + 1) * m, col * n:(col + 1) * n, position]
                assert torch.allclose(block, expected, atol=1e-6)


@pytest.mark.parametrize("block", ["mlp", "conv", "attention"])
def test_on_a_body_every_weight_that_divides_is_built_from_hypermodules(block):
    """scheme.network: body: each task's copy of a block, its weights of 2+ dimensions that divide into
    m x n blocks generated (a 1x1 convolution per position, the depthwise kernels kept by the task)."""
    config = parse_config({**mixed_config().to_dict(), "tasks": mixed_config().to_dict()["tasks"][:2]})
    for task in config.tasks:
        task.architecture = None
    config.model.block, config.model.depth, config.scheme.network = block, 2, "body"
    body = build_model([d.spec for d in load_tasks(config.tasks, config.data)], config).body
    assert isinstance(body, HyperBody)
    shapes = body.block.shapes
    assert set(body.built) == {n for n, s in shapes.items() if len(s) >= 2 and s[0] % 8 == 0 and s[1] % 8 == 0}
    assert "w_in" in body.built or "expand__weight" in body.built or "qkv__weight" in body.built
    assert all(set(own) == set(shapes) - set(body.built) for own in body.own)
    tasks = torch.tensor([1, 0])
    params = body.block_params(1, tasks)
    assert set(params) == set(shapes)
    for name in body.built:
        offset, count = body.layer_slots[1][name]
        out, inp, *kernel = shapes[name]
        for row, t in enumerate(tasks.tolist()):
            first = body.task_start[t] + offset
            weight = params[name][row].reshape(out, inp, -1)
            for loc in (0, count - 1):
                position, rest = divmod(loc, (out // 8) * (inp // 8))
                r, c = divmod(rest, inp // 8)
                expected = body.hypermodules[body.alignment[first + loc]] @ body.contexts[first + loc]
                block_weights = weight[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8, position]
                assert torch.allclose(block_weights, expected * body.gain[first + loc], atol=1e-6)
    x = torch.rand(2, 3, *{"mlp": (16,), "conv": (16, 2, 2), "attention": (4, 16)}[block])  # [T', B, *activation]
    assert body(x, tasks).shape == x.shape
    with pytest.raises(ConfigError, match="every task runs through the body"):
        parse_config({**config.to_dict(), "tasks": mixed_config().to_dict()["tasks"]})


def test_tasks_of_different_architectures_run_and_share_hypermodules(specs):
    model = build_model(specs, mixed_config(alignment="random"))
    assert {l.kind for l in model.body.layers[0]} == {"conv2d", "linear"}
    out = model(torch.rand(5, 8, 8), "digit")
    assert out.shape == (5, 10)
    assert model(torch.rand(5, 20), "kang").shape == (5, 1)
    used = [set(model.body.alignment[model.body.task_locations(t)].tolist()) for t in range(3)]
    assert used[0] & used[1]  # 6 hypermodules across all locations: tasks must share some


def test_candidates_are_soft_merged_in_one_batched_computation(specs):
    body = build_model(specs, mixed_config()).body
    L = len(body.gain)
    candidates = torch.stack([body.alignment, (body.alignment + 1) % 6, (body.alignment + 2) % 6], 1)
    active = torch.ones(L, 3, dtype=torch.bool)
    active[0, 2] = False
    body.begin_generation(candidates, active)
    with torch.no_grad():
        body.scores[:] = torch.randn(L, 3)
    weights = body.candidate_weights()
    assert weights[0, 2] == 0 and torch.allclose(weights.sum(1), torch.ones(L))
    locations = torch.arange(L)
    mixed = body.blocks(locations)
    for loc in (0, 5, L - 1):
        expected = sum(weights[loc, i] * body.orientation[loc, i] * (body.hypermodules[candidates[loc, i]]
                                                                     @ body.contexts[loc])
                       for i in range(3)) * body.gain[loc]
        assert torch.allclose(mixed[loc], expected, atol=1e-6)
    # the mix weights learn by gradient
    assert torch.autograd.grad(body.blocks(locations).sum(), [body.scores])[0].abs().sum() > 0


def test_a_challenger_pointing_the_other_way_enters_negated_and_taking_it_keeps_the_function(specs):
    """A hypermodule and its negation are one module (H z = (-H)(-z)). A challenger whose block points
    against the location's enters in orientation -1, so the mix starts as the location's own function
    (the incumbent holding half the weight); winning with it negates the location's context, so the
    function is unchanged. Without the orientation the pair would cancel (0.5 H z - 0.5 H z = 0)."""
    body = build_model(specs, mixed_config(incumbent_share=0.5)).body
    L = len(body.gain)
    locations = torch.arange(L)
    with torch.no_grad():
        body.hypermodules[1] = -body.hypermodules[0]
        body.alignment[:] = 0
    before = body.blocks(locations).detach()
    body.begin_generation(torch.stack([body.alignment, torch.ones(L, dtype=torch.long)], 1),
                          torch.ones(L, 2, dtype=torch.bool))
    assert (body.orientation[:, 1] == -1).all()
    assert torch.allclose(body.candidate_weights()[:, 0], torch.full((L,), 0.5))
    assert torch.allclose(body.blocks(locations), before, atol=1e-6)
    with torch.no_grad():
        body.scores[:, 1] = 10.0
    assert body.end_generation() == L and (body.alignment == 1).all()
    assert torch.allclose(body.blocks(locations), before, atol=1e-6)


def test_refinement_keeps_the_highest_weighted_candidate(specs):
    body = build_model(specs, mixed_config()).body
    L = len(body.gain)
    before = body.alignment.clone()
    candidates = torch.stack([before, (before + 1) % 6, (before + 2) % 6], 1)
    active = torch.ones(L, 3, dtype=torch.bool)
    active[::2, 1:] = False  # even locations were not picked this generation
    body.begin_generation(candidates, active)
    with torch.no_grad():
        body.scores[:, 2] = 5.0  # the second challenger wins wherever it competes
    changed = body.end_generation()
    assert torch.equal(body.alignment[::2], before[::2])
    assert torch.equal(body.alignment[1::2], candidates[1::2, 2])
    assert changed == len(range(1, L, 2)) and body.scores is None and body.candidates is None


def test_challengers_come_from_other_locations_or_fresh_unused_hypermodules():
    class Options:
        challengers, optimize_fraction, new_probability, sampling = 4, 0.5, 0.3, "proportional"
    alignment = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
    candidates, active, fresh = sample_challengers(alignment, 8, Options, np.random.RandomState(0))
    assert active[:, 0].all() and active.any(1).sum() == 10
    assert active[:, 1:].any(1).sum() == 5  # half the locations get challengers
    challengers = candidates[:, 1:][active[:, 1:]].tolist()
    assert set(challengers) <= set(alignment) | set(fresh)
    assert set(fresh) <= {3, 4, 5, 6, 7} and len(set(fresh)) == len(fresh)
    assert all(candidates[i, j] != alignment[i] for i in range(10) for j in range(1, 5) if active[i, j])


def test_alignment_init_options(specs):
    groups = build_model(specs, mixed_config(alignment="groups", groups=[0, 1, 0], hypermodules=200)).body
    a0, a2 = (groups.alignment[groups.task_locations(t)] for t in (0, 2))
    assert torch.equal(a0[: len(a2)], a2)  # location j of tasks in one group share a hypermodule
    distinct = build_model(specs, mixed_config(alignment="distinct", hypermodules=None)).body
    assert len(set(distinct.alignment.tolist())) == len(distinct.gain)
    with pytest.raises(ConfigError, match="distinct"):
        build_model(specs, mixed_config(alignment="distinct", hypermodules=3))
    with pytest.raises(ConfigError, match="groups"):
        build_model(specs, mixed_config(alignment="groups"))
    with pytest.raises(ConfigError, match="only the hyper scheme"):
        parse_config({**mixed_config().to_dict(), "scheme": {"kind": "hard"}})


@pytest.fixture(scope="module")
def hyper_run(tmp_path_factory):
    return open_run(train(mixed_config(), tmp_path_factory.mktemp("runs"), quiet=True))


def test_search_records_its_history_and_reloads_the_best_alignment(hyper_run):
    doc, _ = hyper_run.routing()
    history = doc["history"]
    assert [h["generation"] for h in history] == [0, 1, 2]
    best = min(history, key=lambda h: h["dev_loss"])
    assert hyper_run.summary()["search"]["best_generation"] == best["generation"]
    assert doc["alignment"] == best["alignment"]


def test_alignment_round_trip_and_edit(hyper_run, tmp_path):
    model = hyper_run.load_model()
    doc, arrays = routing.encode(model)
    fresh = build_model(model.specs, hyper_run.config())
    fresh.load_state_dict(model.state_dict())
    routing.apply(fresh, routing.decode(json.loads(json.dumps(doc)), arrays, fresh))
    x = torch.rand(4, 8, 8)
    assert torch.equal(model(x, "digit"), fresh(x, "digit"))
    edited = json.loads(json.dumps(doc))
    edited["alignment"]["digit"] = [(k + 1) % doc["hypermodules"] for k in edited["alignment"]["digit"]]
    result = evaluate_run(hyper_run, edited, device="cpu")
    assert result["metrics"]["digit"]["test_delta"] != 0
    assert result["metrics"]["kang"]["test_delta"] == pytest.approx(0, abs=1e-9)
    path = routing.write(tmp_path / "edit", edited, {})
    assert main(["eval", str(hyper_run.path), "--routing", str(path), "--json"]) == 0
    assert json.loads((hyper_run.path / "routing.json").read_text())["alignment"] == doc["alignment"]


@pytest.mark.parametrize("value, message", [
    (99, "hypermodule index in 0..5"), (-1, "hypermodule index"), (True, "hypermodule index"),
    (1.5, "hypermodule index"), (float("nan"), "hypermodule index"), ("H1", "hypermodule index"),
])
def test_invalid_alignments_are_refused(hyper_run, value, message):
    doc, _ = hyper_run.routing()
    entry = [value] + doc["alignment"]["parity"][1:]
    with pytest.raises(RoutingError, match=message):
        evaluate_run(hyper_run, {**doc, "alignment": {**doc["alignment"], "parity": entry}}, device="cpu")
    with pytest.raises(RoutingError, match="expected a list of"):
        evaluate_run(hyper_run, {**doc, "alignment": {**doc["alignment"], "parity": entry[1:]}}, device="cpu")
    with pytest.raises(RoutingError, match="alignment"):
        evaluate_run(hyper_run, {**doc, "alignment": {"kang": doc["alignment"]["kang"]}}, device="cpu")


def test_finetuning_contexts_only_keeps_hypermodules(hyper_run, tmp_path):
    from lsmn_core.training.finetune import FinetunePlan, finetune

    child = open_run(finetune(hyper_run, FinetunePlan(10, "routing"), tmp_path, device="cpu"))
    parent, after = hyper_run.load_model().state_dict(), child.load_model().state_dict()
    assert torch.equal(parent["body.hypermodules"], after["body.hypermodules"])
    assert not torch.equal(parent["body.contexts"], after["body.contexts"])
    assert child.routing()[0]["alignment"] == hyper_run.routing()[0]["alignment"]


def test_sharing_analysis():
    alignment = {"a": [0, 1], "b": [1, 2], "c": [3], "d": [3]}
    assert usage_counts(alignment) == {1: 2, 3: 2, 0: 1, 2: 1}
    assert subset_proportions(alignment) == {("a",): 0.25, ("a", "b"): 0.25, ("b",): 0.25, ("c", "d"): 0.25}
    graph = sharing_graph(alignment)
    assert graph.number_of_nodes() == 4 + 6 + 4 and graph.degree(("hypermodule", 1)) == 2
    assert sharing_graph(alignment, blocks=False).number_of_edges() == 6
    assert task_graph(alignment).edges["a", "b"]["weight"] == 1 and not task_graph(alignment).has_edge("a", "c")
    assert cluster_labels(alignment) == [0, 0, 1, 1]
    assert adjusted_rand_index([0, 0, 1, 1], [5, 5, 7, 7]) == 1.0
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) < 0


def test_search_finds_the_groups_of_a_user_data_set(tmp_path):
    """configs/groups: 4 groups of uneven sizes in 16 dimensions, 10 training samples per task, given as
    .npz files. Alone, no task can find its weights; the search must discover which tasks share, and
    how many hypermodules it needs (not tuned to Kang's 3 x 10)."""
    config_file = REPO / "configs" / "groups" / "groups.yaml"
    groups = load_config(config_file).scheme.groups

    def mean(run):
        return np.mean([m["test"] for m in run.summary()["metrics"].values()])

    run = open_run(train(load_config(config_file), tmp_path, quiet=True))
    assert adjusted_rand_index(cluster_labels(run.routing()[0]["alignment"]), groups) >= 0.9
    oracle = open_run(train(load_config(config_file, ["scheme.alignment=groups", "scheme.generations=0"]),
                            tmp_path, quiet=True))
    stl = open_run(train(load_config(config_file, ["scheme.alignment=distinct", "scheme.hypermodules=null",
                                                   "scheme.generations=0"]), tmp_path, quiet=True))
    assert mean(run) <= mean(oracle) + 0.05
    assert mean(run) < 0.5 * mean(stl)


def test_search_finds_kang_s_groups_whatever_the_sign_of_each_task_s_scale(tmp_path):
    """Kang's clean tasks as published: 10 training and 5 validation samples, scales of either sign
    and any size. The search must put every task, negative ones included, on its group's hypermodule
    (before challengers entered in the orientation that agrees with the location, the groups split in
    two by sign), and reach the oracle's error. A shorter search than configs/kang.yaml's."""
    config = load_config(REPO / "configs" / "kang.yaml", ["scheme.generations=80"])
    run = open_run(train(config, tmp_path, quiet=True))
    assert adjusted_rand_index(cluster_labels(run.routing()[0]["alignment"]), config.scheme.groups) == 1.0
    assert np.mean([m["test"] for m in run.summary()["metrics"].values()]) < 0.02


def test_the_closed_form_single_task_row_fits_each_task_s_own_training_split(tmp_path):
    """The muir study's "single-task least squares" row: each task's minimum-norm least-squares fit
    to its training split alone (10 of Kang's 15 samples, for 20 weights), which passes through those
    samples and, where they are as many as the weights, recovers a clean linear task exactly; any
    task that is no regression on vectors leaves the row out."""
    config = seed_config(REPO / "configs" / "kang.yaml", [], 1, "noisy")
    data = load_tasks(config.tasks, config.data)
    fitted = []
    for task in data:
        (x, y), (x_test, y_test) = task.splits["train"], task.splits["test"]
        assert len(x) == 10
        w = np.linalg.pinv(x.astype(np.float64)) @ y
        assert np.allclose(x @ w, y, atol=1e-4)  # fewer samples than weights: the fit passes through them
        fitted.append(np.sqrt(np.mean((x_test @ w - y_test) ** 2)))
    assert least_squares_rmse(data) == pytest.approx(np.mean(fitted), rel=1e-6)
    assert least_squares_rmse(load_tasks(config.tasks, load_config(REPO / "configs" / "kang.yaml").data)) != \
        pytest.approx(np.mean(fitted), rel=1e-3)  # another seed's draw is another data set

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (90, 5)).astype(np.float32)
    y = x @ rng.normal(size=5).astype(np.float32)
    np.savez(tmp_path / "line.npz", X=x[:30], y=y[:30], X_dev=x[30:60], y_dev=y[30:60], X_test=x[60:], y_test=y[60:])
    line = parse_config({"name": "line", "tasks": [
        {"name": "line", "file": str(tmp_path / "line.npz"), "kind": "regression", "standardise": False}]})
    assert least_squares_rmse(load_tasks(line.tasks, line.data)) < 1e-4
    digits = parse_config({"name": "d", "tasks": [{"name": "d", "dataset": "digits", "target": "digit"}]})
    assert least_squares_rmse(load_tasks(digits.tasks, digits.data)) is None


def test_the_floor_row_is_what_a_group_s_training_samples_cannot_see(tmp_path):
    """The muir study's floor: a group whose tasks hold as many training samples as inputs leaves
    nothing of its direction unseen (0); a group of two tasks with 10 samples each on 24 inputs
    leaves 4 of its 24 dimensions unseen, and the test error of the truth's part there is the floor,
    computed here by hand from that null space."""
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(2, 24))
    groups = [0, 0, 0, 1, 1]
    tasks, unseen = [], []
    for t, g in enumerate(groups):
        x = rng.uniform(-1, 1, (40, 24)).astype(np.float32)
        y = x @ (rng.uniform(0.5, 2) * directions[g]).astype(np.float32)
        np.savez(tmp_path / f"t{t}.npz", X=x[:10], y=y[:10], X_dev=x[10:20], y_dev=y[10:20],
                 X_test=x[20:], y_test=y[20:])
        tasks.append({"name": f"t{t}", "file": str(tmp_path / f"t{t}.npz"), "kind": "regression", "standardise": False})
    config = parse_config({"name": "floor", "tasks": tasks})
    data = load_tasks(config.tasks, config.data)
    assert undetermined_rmse(data[:3], groups[:3]) < 1e-6  # 30 samples for 24 inputs: all seen
    seen = np.concatenate([task.splits["train"][0] for task in data[3:]]).astype(np.float64)
    null = np.linalg.svd(seen)[2][20:]  # 20 samples span 20 of the 24 dimensions
    for task in data[3:]:
        x_all = np.concatenate([task.splits[s][0] for s in ("train", "dev", "test")]).astype(np.float64)
        y_all = np.concatenate([task.splits[s][1] for s in ("train", "dev", "test")]).astype(np.float64)
        truth = np.linalg.lstsq(x_all, y_all, rcond=None)[0]
        unseen.append(np.sqrt(np.mean((task.splits["test"][0] @ null.T @ null @ truth) ** 2)))
    assert undetermined_rmse(data[3:], groups[3:]) == pytest.approx(np.mean(unseen), rel=1e-4)
    assert undetermined_rmse(data, groups) == pytest.approx(2 * np.mean(unseen) / 5, rel=1e-4)
    assert np.mean(unseen) > 0.3
