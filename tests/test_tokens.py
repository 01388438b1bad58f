"""Token tasks (integer ids, 0 the padding) through the attention block: padding is never attended,
sequence heads average the real tokens, tagging scores real tokens only, every scheme trains them."""

import json

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from helpers import APP_PATIENCE, REPO, tiny_config, spec_of
from lsmn.cli import main
from lsmn_core.data.loading import load_tasks
from lsmn_core.config import DataConfig, TaskConfig
from lsmn_core.errors import ConfigError, DataError
from lsmn_core.schemes import build_model
from lsmn_core.store.runs import open_run
from lsmn_core.data.tasks import task_loss
from lsmn_core.training.trainer import train

TOKEN_TASKS = [{"name": "has3", "source": "toy_tokens:sequences", "tokens": True},
               {"name": "even", "source": "toy_tokens:sequences", "tokens": True, "args": {"tagging": True}}]
SCHEMES = {"independent": {}, "hard": {}, "sparse": {"prune_rate": 0.5, "min_density": 0.5, "round_steps": 3},
           "mann": {"keep": 0.3, "rounds": 1, "round_steps": 3}, "mixture": {"templates": 2},
           "moe": {"experts": 3, "top_k": 2},
           "hyper": {"network": "body", "block": [8, 8], "generations": 1, "generation_steps": 3},
           "hierarchical": {"depths": {"has3": 1}}, "soft": {}}


@pytest.fixture(autouse=True)
def factories_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tests"))


def token_config(scheme="hard", block="attention", **train):
    return tiny_config(tasks=TOKEN_TASKS, scheme={"kind": scheme, **SCHEMES[scheme]},
                       model={"block": block, "width": 16, "depth": 2, "heads": 2},
                       train={"steps": 6, "batch_size": 16, "eval_every": 3, "device": "cpu", **train})


@pytest.mark.parametrize("block", ["attention", "lstm"])
def test_padding_is_never_attended_and_sequence_heads_average_the_real_tokens(block):
    config = token_config(block=block)
    data = load_tasks(config.tasks, config.data)
    model = build_model([d.spec for d in data], config).eval()
    x = torch.tensor([[4, 7, 3, 2, 5] + [0] * 7])  # 5 real tokens, 7 of padding
    positions = next(m for m in model.encoders.modules() if hasattr(m, "embedding")).embedding
    before = model.forward_tasks(x)
    with torch.no_grad():
        positions[5:] += torch.randn(7, 16)  # the padded slots' activations change ...
    after = model.forward_tasks(x)
    assert torch.allclose(before[0], after[0], atol=1e-6)  # ... the sequence's class does not
    assert torch.allclose(before[1][:, :5], after[1][:, :5], atol=1e-6)  # nor any real token's tag
    with torch.no_grad():
        positions[:5] += torch.randn(5, 16)  # a real token's position does matter
    assert not torch.allclose(model.forward_tasks(x)[0], after[0], atol=1e-4)


def test_tagging_loss_and_accuracy_count_real_tokens_only():
    config = token_config()
    spec = load_tasks(config.tasks, config.data)[1].spec
    assert spec.kind == "tagging" and spec.metric == "accuracy" and spec.modality == "tokens" and spec.vocab == 9
    target = torch.tensor([[1, 0, -1, -1]])
    right = torch.tensor([[[0.0, 9.0], [9.0, 0.0], [9.0, 0.0], [9.0, 0.0]]])  # right on the 2 real tokens
    wrong_on_padding = right.clone()
    wrong_on_padding[0, 2:] = torch.tensor([0.0, 9.0])  # what it says on padding does not count
    assert task_loss(spec, right, target) == pytest.approx(task_loss(spec, wrong_on_padding, target).item())


@pytest.mark.parametrize("block", ["attention", "lstm"])
@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_token_tasks_train_under_every_scheme(tmp_path, scheme, block):
    run = open_run(train(token_config(scheme, block), tmp_path, quiet=True))
    metrics = run.summary()["metrics"]
    assert run.status == "done" and set(metrics) == {"has3", "even"}
    assert all(0 <= m["test"] <= 1 for m in metrics.values())
    model = run.load_model()
    assert model(torch.tensor([[1, 2, 0, 0] + [0] * 8]), "even").shape == (1, 12, 2)


@pytest.mark.parametrize("block", ["attention", "lstm"])
def test_token_tasks_learn(tmp_path, block):
    run = open_run(train(token_config(block=block, steps=300, eval_every=100, batch_size=32), tmp_path, quiet=True))
    metrics = run.summary()["metrics"]
    assert metrics["even"]["test"] > 0.9 and metrics["has3"]["test"] > 0.75  # chance 0.5 and about 0.7


@pytest.mark.parametrize("change, message", [
    ({"model": {"block": "mlp"}}, "token tasks need model.block attention or lstm, not mlp"),
    ({"model": {"block": "conv"}}, "token tasks need model.block attention or lstm, not conv"),
    ({"model": {"block": "mlp"}, "scheme": {"kind": "hyper"}}, "token tasks need a body of attention blocks"),
])
def test_token_tasks_on_blocks_that_cannot_read_them_are_refused(tmp_path, capsys, change, message):
    data = token_config().to_dict()
    data["model"].update(change.get("model", {}))
    data["scheme"] = change.get("scheme", data["scheme"])
    (tmp_path / "c.yaml").write_text(json.dumps(data))
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_bad_token_data_is_refused(tmp_path):
    np.savez(tmp_path / "neg.npz", X=-np.ones((10, 4), dtype=int), y=np.zeros(10))
    np.savez(tmp_path / "float.npz", X=np.ones((10, 4)), y=np.zeros(10))
    np.savez(tmp_path / "empty.npz", X=np.zeros((10, 4), dtype=int), y=np.zeros(10))
    np.savez(tmp_path / "shape.npz", X=np.ones((10, 4), dtype=int), y=np.zeros((10, 3)))
    for file, expected in (("neg", "integers >= 0"), ("float", "integers >= 0"), ("empty", "at least one token"),
                           ("shape", "must have X's shape")):
        with pytest.raises(DataError, match=expected):
            load_tasks([TaskConfig(name="t", file=str(tmp_path / f"{file}.npz"), tokens=True)], DataConfig())


def test_every_app_page_renders_a_token_run(tmp_path, monkeypatch):
    train(token_config("sparse"), tmp_path, quiet=True)
    import app.state

    monkeypatch.setattr(app.state, "DEFAULT_RUNS", str(tmp_path))
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=APP_PATIENCE).run()
    for page in ["views/overview.py", "views/masks.py", "views/signatures.py", "views/sharing.py",
                 "views/attributions.py", "views/edit.py", "views/compare.py"]:
        at.switch_page(page).run()
        assert not at.exception and not at.error, (page, [e.value for e in at.error])
    at.switch_page("views/attributions.py").run()
    run = open_run(next(tmp_path.iterdir()))
    dev, truth = (split[0] for split in load_tasks(run.config().tasks, run.config().data)[0].splits["dev"])
    (chart,) = [json.loads(spec_of(c)) for c in at.get("plotly_chart") if "attr_tokens" in c.proto.id]
    # the sequence's real tokens label the columns (these ids have no text: their numbers)
    assert chart["layout"]["xaxis"]["ticktext"] == [f"#{i}" for i in dev if i != 0]
    predicted = int(run.load_model()(torch.as_tensor(dev[None]), "has3").argmax())
    assert chart["data"][0]["y"] == [f"has3 (predicts {predicted} · true {truth})", "even (every token's tag)"]
    at.selectbox(key=f"attr_position_{run.id}").set_value(1).run()
    (chart,) = [json.loads(spec_of(c)) for c in at.get("plotly_chart") if "attr_tokens" in c.proto.id]
    assert chart["layout"]["shapes"][0]["x0"] == 1 and "tags it" in chart["data"][0]["y"][1]


def test_config_errors_name_the_token_problem():
    with pytest.raises(ConfigError, match="token tasks need model.block attention"):
        build_model([d.spec for d in load_tasks(token_config().tasks, token_config().data)],
                    tiny_config(tasks=TOKEN_TASKS, scheme={"kind": "hard"}))


def test_token_ids_the_model_never_saw_are_refused_in_one_line(tmp_path, capsys):
    run_dir = train(token_config(), tmp_path, quiet=True)
    meta = json.loads((run_dir / "run.json").read_text())
    meta["config"]["tasks"][0]["args"] = {"vocab": 12}  # the data changed since: ids up to 11, the model knows 0..8
    (run_dir / "run.json").write_text(json.dumps(meta))
    for command in (["eval", str(run_dir)], ["finetune", str(run_dir), "--steps", "2", "--quiet"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "token id 11, out of the range the run's model knows (0 .. 8)" in err
