"""Hierarchical sharing: one shared body, each task read out at its own depth."""

import pytest
import torch

from helpers import tiny_config, spec_of
from lsmn_core.data.loading import load_tasks
from lsmn_core.errors import ConfigError
from lsmn_core.schemes import build_model, check_config
from lsmn_core.store.runs import open_run
from lsmn_core.training.trainer import train

SCHEME = {"kind": "hierarchical", "depths": {"digit": 1}}  # the tiny config's body has 2 blocks


@pytest.fixture(scope="module")
def specs():
    config = tiny_config()
    return [d.spec for d in load_tasks(config.tasks, config.data)]


def test_a_task_reads_the_shared_body_after_its_own_depth(specs):
    model = build_model(specs, tiny_config(scheme=SCHEME))
    hard = build_model(specs, tiny_config(scheme={"kind": "hard"}))
    hard.body.load_state_dict(model.body.state_dict())
    h = torch.randn(3, 5, 32)
    tasks = torch.tensor([0, 1, 2])  # digit (depth 1), parity and position (the whole body)
    out, full = model.body(h, tasks), hard.body(h, tasks)
    first_block = h[:1] + hard.body.layer_update(h[:1], tasks[:1], 0)
    assert torch.allclose(out[0], first_block[0]) and not torch.allclose(out[0], full[0])
    assert torch.allclose(out[1:], full[1:])


def test_a_shallow_task_never_trains_the_blocks_above_it(specs):
    model = build_model(specs, tiny_config(scheme=SCHEME))
    model.body(torch.randn(1, 8, 32), torch.tensor([0])).square().sum().backward()
    grads = {name: p.grad for name, p in model.body.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("blocks.0."))
    assert all(g is None or g.abs().sum() == 0 for n, g in grads.items() if n.startswith("blocks.1."))
    usage = model.body.usage(0)
    assert all(u.all() == n.startswith("blocks.0.") for n, u in usage.items())
    assert model.body.density().tolist() == [[1.0, 0.0], [1.0, 1.0], [1.0, 1.0]]


@pytest.mark.parametrize("depths, message", [
    ({"nothing": 1}, "'nothing' is not a task"), ({"digit": 0}, "1 .. 2"), ({"digit": 3}, "1 .. 2"),
    ({"digit": True}, "1 .. 2")])
def test_depths_must_name_tasks_and_lie_within_the_body(depths, message):
    with pytest.raises(ConfigError, match=message):
        check_config(tiny_config(scheme={"kind": "hierarchical", "depths": depths}))


def test_a_trained_run_reports_each_task_s_depth_and_fewer_active_parameters_for_shallow_tasks(tmp_path):
    config = tiny_config(scheme=SCHEME, train={"steps": 20, "batch_size": 16, "eval_every": 20, "device": "cpu"})
    summary = open_run(train(config, tmp_path, quiet=True)).summary()
    assert summary["routing"]["depths"] == {"digit": 1, "parity": 2, "position": 2}
    active = summary["params"]["active"]
    assert active["digit"] < active["parity"]


def test_every_app_page_shows_a_hierarchical_run_and_the_overview_its_depths(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import app.state
    from helpers import APP_PATIENCE, REPO

    config = tiny_config(scheme=SCHEME, train={"steps": 20, "batch_size": 16, "eval_every": 20, "device": "cpu"})
    train(config, tmp_path, quiet=True)
    monkeypatch.setenv("LSMN_RUNS", str(tmp_path))
    monkeypatch.setattr(app.state, "DEFAULT_RUNS", str(tmp_path))
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=APP_PATIENCE).run()
    assert not at.exception and not at.error
    assert any("Depth each task is supervised at" in spec_of(c) for c in at.get("plotly_chart"))
    for page in ["views/masks.py", "views/signatures.py", "views/sharing.py", "views/attributions.py",
                 "views/edit.py", "views/compare.py"]:
        at.switch_page(page).run()
        assert not at.exception and not at.error, page
