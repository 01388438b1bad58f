"""Soft sharing: a network per task, cross-stitch units mixing their activations after each block."""

import pytest
import torch

from helpers import tiny_config, spec_of
from lsmn_core.data.loading import load_tasks
from lsmn_core.errors import ConfigError
from lsmn_core.schemes import build_model, check_config
from lsmn_core.schemes.base import IsometricScheme
from lsmn_core.store.runs import open_run
from lsmn_core.training.trainer import train

TRAIN = {"steps": 20, "batch_size": 16, "eval_every": 20, "device": "cpu"}


@pytest.fixture(scope="module")
def specs():
    config = tiny_config()
    return [d.spec for d in load_tasks(config.tasks, config.data)]


def soft_model(specs, **options):
    return build_model(specs, tiny_config(scheme={"kind": "soft", **options}))


def test_identity_stitches_leave_each_task_its_own_column(specs):
    body = soft_model(specs, self_weight=1.0).body
    h, tasks = torch.randn(3, 5, 32), torch.tensor([2, 0, 1])
    alone = IsometricScheme.forward(body, h, tasks)  # each row through its own task's blocks only
    assert torch.allclose(body(h, tasks), alone, atol=1e-6)


def test_a_stitch_mixes_each_row_s_columns_by_the_layer_s_weights(specs):
    body = soft_model(specs).body
    assert torch.allclose(body.stitches[0].diagonal(), torch.full((3,), 0.9))
    assert torch.allclose(body.stitches[0].sum(1), torch.ones(3))  # started as a convex mix
    x = torch.randn(2 * 3, 4, 32)  # two rows, three columns each
    mixed = body.stitch(x, 0, rows=2)
    by_hand = sum(body.stitches[0][1, s] * x[3 + s] for s in range(3))  # row 1, column 1
    assert torch.allclose(mixed[4], by_hand, atol=1e-6)


def test_one_task_s_loss_trains_every_column_through_the_stitches(specs):
    body = soft_model(specs).body
    body(torch.randn(1, 8, 32), torch.tensor([0])).square().sum().backward()
    for name, p in body.blocks[0].items():
        assert all(p.grad[column].abs().sum() > 0 for column in range(3)), name
    assert body.stitches.grad[:, 0].abs().sum() > 0  # task 0's own stitches learn
    # with identity stitches the same loss reaches task 0's column only (no sharing at all)
    alone = soft_model(specs, self_weight=1.0).body
    alone.stitches.requires_grad_(False)
    alone(torch.randn(1, 8, 32), torch.tensor([0])).square().sum().backward()
    assert all(p.grad[1:].abs().sum() == 0 for p in alone.blocks[0].values())


def test_the_tapped_forward_is_the_forward(specs):
    model = soft_model(specs)
    x = torch.rand(6, 8, 8)
    taps = torch.nn.ModuleList(torch.nn.Identity() for _ in range(model.module_count(1)))
    assert torch.allclose(model.forward_tapped(x, 1, taps), model(x, 1), atol=1e-6)


def test_more_tasks_than_it_can_run_columns_for_are_refused():
    tasks = [{"name": f"t{i}", "dataset": "digits", "target": "digit"} for i in range(65)]
    with pytest.raises(ConfigError, match="at most 64 tasks"):
        check_config(tiny_config(tasks=tasks, scheme={"kind": "soft"}))


def test_a_trained_run_reports_its_stitches_and_every_parameter_active_for_every_task(tmp_path):
    run = open_run(train(tiny_config(scheme={"kind": "soft"}, train=TRAIN), tmp_path, quiet=True))
    summary = run.summary()
    stitches = summary["routing"]["stitches"]
    assert set(stitches) == {"digit", "parity", "position"} and all(set(row) == set(stitches) for row in
                                                                       stitches.values())
    assert all(len(weights) == 2 for row in stitches.values() for weights in row.values())
    assert stitches["digit"]["digit"][0] != 0.9  # trained (at stitch_lr_scale times the rate)
    model = run.load_model()
    body = sum(p.numel() for p in model.body.parameters())
    assert all(u.all() for t in range(3) for n, u in model.usage(t).items() if n.startswith("body."))
    assert summary["params"]["shared"] >= body and min(summary["params"]["active"].values()) > body


def test_every_app_page_shows_a_soft_run_and_the_overview_its_stitches(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import app.state
    from helpers import APP_PATIENCE, REPO

    train(tiny_config(scheme={"kind": "soft"}, train=TRAIN), tmp_path, quiet=True)
    monkeypatch.setenv("LSMN_RUNS", str(tmp_path))
    monkeypatch.setattr(app.state, "DEFAULT_RUNS", str(tmp_path))
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=APP_PATIENCE).run()
    assert not at.exception and not at.error
    assert any("Cross-stitch weights after block 1" in spec_of(c) for c in at.get("plotly_chart"))
    at.slider(key=next(s.key for s in at.slider if s.key.startswith("stitch_layer_"))).set_value(0).run()
    assert any("Cross-stitch weights after block 0" in spec_of(c) for c in at.get("plotly_chart"))
    for page in ["views/masks.py", "views/signatures.py", "views/sharing.py", "views/attributions.py",
                 "views/edit.py", "views/compare.py"]:
        at.switch_page(page).run()
        assert not at.exception and not at.error, page
    at.switch_page("views/sharing.py").run()
    assert any("Cross-stitch weights" in spec_of(c) for c in at.get("plotly_chart"))


def test_the_sharing_study_tables_every_task_under_the_five_schemes_and_the_encoder_variant(tmp_path):
    import yaml

    from helpers import TINY
    from lsmn.studies import SHARING_SCHEMES, sharing_study

    (tmp_path / "digits.yaml").write_text(yaml.safe_dump(
        {**TINY, "train": {"steps": 10, "batch_size": 16, "eval_every": 10, "device": "cpu"}}))
    table = sharing_study(seeds=(0,), configs=tmp_path).splitlines()
    assert table[0] == "| task | " + " | ".join(SHARING_SCHEMES) + " |"
    assert list(SHARING_SCHEMES) == ["single-task", "hard", "soft", "hierarchical", "sparse", "sparse, encoder too"]
    assert [row.split(" | ")[0] for row in table[2:]] == ["| digit", "| parity", "| position", "| total parameters"]
    totals = [float(cell.rstrip("k |")) for cell in table[-1].split(" | ")[1:]]
    assert totals[0] > totals[1] and totals[2] > totals[1]  # a body per task, or one for all
