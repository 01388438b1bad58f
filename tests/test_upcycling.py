"""Sparse upcycling (moe on a checkpoint): each layer's feed-forward block copied into E experts, a
noisy top-k gate per layer. Before training every expert is the checkpoint's own block, so the
network is the checkpoint; a trained run's forward is the gated sum of its experts' blocks written
out by hand; expert usage per task and layer is recorded; the experts a task may use are edited and
obeyed; layers without one feed-forward pair, and a top-k above E, are refused in one line."""

import json

import pytest
import torch
import torch.nn.functional as F

from lsmn.cli import main
from lsmn_core.config import parse_config
from lsmn_core.errors import ConfigError
from lsmn_core.schemes import build_model
from lsmn_core.schemes.moe.upcycling import UpcycledExperts
from lsmn_core.store import routing
from lsmn_core.store.runs import open_run
from lsmn_core.training.trainer import train
from tiny_models import SENTENCE_TASKS, TOKEN_IDS

IDS = torch.tensor(TOKEN_IDS)


def upcycled_config(bert, **scheme) -> dict:
    return {"name": "upcycled", "seed": 0, "tasks": SENTENCE_TASKS, "model": {"pretrained": {"hf": str(bert)}},
            "scheme": {"kind": "moe", "experts": 3, "top_k": 2, **scheme},
            "train": {"steps": 30, "eval_every": 15, "batch_size": 16, "lr": 0.003, "device": "cpu"}}



@pytest.fixture(scope="module")
def upcycled(bert, tmp_path_factory):
    config = {**upcycled_config(bert), "model": {"pretrained": {"hf": str(bert)}, "finetune_lr_scale": 1.0}}
    return open_run(train(parse_config(config), tmp_path_factory.mktemp("runs"), quiet=True))


def plain_features(bert):
    from transformers import AutoModel

    plain = AutoModel.from_pretrained(bert, local_files_only=True).eval()
    with torch.no_grad():
        return plain(input_ids=IDS, attention_mask=(IDS != 0).long()).last_hidden_state


def test_the_experts_start_as_the_checkpoint_s_own_feed_forward_block(bert):
    model = build_model(open_run_specs(bert), parse_config(upcycled_config(bert))).eval()
    assert isinstance(model.body, UpcycledExperts)
    assert model.body.pairs == [(f"encoder.layer.{i}.intermediate.dense.weight",
                                 f"encoder.layer.{i}.output.dense.weight") for i in (0, 1)]
    with torch.no_grad():
        real = IDS != 0  # padding tokens skip the experts (their outputs are read by nothing)
        for task in (0, 1):
            assert torch.allclose(model.features(IDS, task)[0][real], plain_features(bert)[real], atol=1e-5)


def open_run_specs(bert):
    from lsmn_core.data.loading import load_tasks
    from lsmn_core.pretrained.text import tokenization

    config = parse_config(upcycled_config(bert))
    return [d.spec for d in load_tasks(config.tasks, config.data, tokenization(config, bert.parent / ".data"))]


def test_a_layer_is_the_gated_sum_of_its_experts(upcycled, bert):
    model = upcycled.load_model().eval()
    body, network = model.body, model.network().module
    layer = network.encoder.layer[0]
    hidden = torch.randn(2, 6, 32)
    padding = IDS == 0
    forwards = body.module_forwards(1, network, padding)
    first, second = (n.removesuffix(".weight") for n in body.pairs[0])
    with torch.no_grad():
        mixed = forwards[second](layer.intermediate.intermediate_act_fn(forwards[first](hidden)))
        gates = body.gate(hidden.reshape(12, 32), torch.full((12,), 1), 0)[0]
        weights = {n: dict(network.named_parameters())[n] for n in body.pairs[0]}
        deltas = [body.deltas[n.replace(".", "__")] for n in body.pairs[0]]
        expected = torch.zeros(12, 32)
        for e in range(3):
            inner = F.gelu(F.linear(hidden.reshape(12, 32), weights[body.pairs[0][0]] + deltas[0][e],
                                    layer.intermediate.dense.bias))
            expected += gates[:, e:e + 1] * F.linear(inner, weights[body.pairs[0][1]] + deltas[1][e])
        expected += layer.output.dense.bias
        real = (~padding).reshape(-1)
        assert torch.allclose(mixed.reshape(12, 32)[real], expected[real], atol=1e-5)
        assert ((gates > 0).sum(-1) == 2).all()
    assert body.deltas[body.pairs[0][0].replace(".", "__")].abs().sum() > 0  # training moved the experts apart


def test_expert_usage_is_recorded_and_an_edit_of_the_allowed_experts_is_obeyed(upcycled, capsys):
    stats = upcycled.summary()["routing"]["gate_stats"]
    assert set(stats) == {"cat", "parity"} and len(stats["cat"]["usage"]) == 2
    assert all(abs(sum(u) - 2) < 1e-4 for u in stats["cat"]["usage"])  # top 2: each token counts twice
    assert len(upcycled.summary()["routing"]["specialisation"]) == 2
    doc, arrays = routing.read(upcycled.path / "routing.json")
    model = upcycled.load_model().eval()
    only = [[True, False, False], [False, False, True]]
    routing.apply(model, routing.decode({**doc, "allowed": {**doc["allowed"], "cat": only}}, arrays, model))
    model.body.reset_statistics()
    with torch.no_grad():
        model.features(IDS, 0)
    usage = model.body.gate_statistics(["cat", "parity"])["cat"]["usage"]
    assert usage[0] == [1.0, 0.0, 0.0] and usage[1] == [0.0, 0.0, 1.0]
    assert main(["show", str(upcycled.path), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["metrics"]) == {"cat", "parity"}


def test_bad_upcycling_is_refused_in_one_line(bert):
    with pytest.raises(ConfigError, match="layer 0 has 1 feed-forward in, 0 feed-forward out"):
        build_model(open_run_specs(bert), parse_config(
            {**upcycled_config(bert), "model": {"pretrained": {"hf": str(bert)}, "targets": ["intermediate.dense"]}}))
    with pytest.raises(ConfigError, match=r"scheme.top_k \(4\) exceeds scheme.experts \(3\)"):
        build_model(open_run_specs(bert), parse_config(upcycled_config(bert, top_k=4)))
    with pytest.raises(ConfigError, match="scheme.experts: must be in 2 .. 4,096; got 0"):
        parse_config(upcycled_config(bert, experts=0))


def test_the_app_shows_expert_usage_and_edits_the_allowed_experts(upcycled, monkeypatch):
    from helpers import open_each_page, spec_of, start_app

    at = start_app(monkeypatch, upcycled.path.parent)
    open_each_page(at, ["views/overview.py", "views/sharing.py", "views/attributions.py", "views/edit.py"])
    at.switch_page("views/overview.py").run()
    specs = [spec_of(c) for c in at.get("plotly_chart")]
    assert any("Expert usage per task and layer" in s for s in specs)
    assert any("Expert specialisation per layer" in s for s in specs)
    at.switch_page("views/edit.py").run()
    assert at.dataframe[0].value.columns[0] == "expert 0"  # the editor of the experts each task may use
