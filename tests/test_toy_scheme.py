"""A scheme registered from the test folder goes through training, the run store, `lsmn show`,
`lsmn eval` under an edited routing, and every app page: nothing outside the test names it."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from helpers import APP_PATIENCE, REPO, tiny_config
from lsmn.cli import main
from lsmn_core import schemes
from lsmn_core.store import routing
from lsmn_core.store.runs import open_run
from lsmn_core.training.trainer import train
from toy_scheme import Toy

PAGES = ["views/overview.py", "views/masks.py", "views/signatures.py", "views/sharing.py", "views/attributions.py",
         "views/edit.py", "views/compare.py"]


@pytest.fixture
def toy_run(tmp_path, monkeypatch):
    schemes.register(Toy)
    try:
        yield open_run(train(tiny_config(scheme={"kind": "toy"}, train={"steps": 60, "batch_size": 32,
                                                                          "eval_every": 30, "device": "cpu"}),
                             tmp_path / "runs", quiet=True))
    finally:
        schemes.SCHEMES.unregister(Toy.kind)


def test_a_scheme_from_outside_trains_and_is_stored(toy_run):
    assert toy_run.status == "done" and toy_run.scheme == "toy"
    doc, _ = toy_run.routing()
    assert doc["scheme"] == "toy" and set(doc["gains"]) == set(toy_run.task_names)
    assert any(g != 1.0 for g in doc["gains"]["digit"])  # the gains trained
    model = toy_run.load_model()
    assert model.body.gain.tolist() == [doc["gains"][t] for t in toy_run.task_names]
    params = toy_run.summary()["params"]
    assert params["active"]["digit"] < params["total"]  # the other tasks' gains and heads are not digit's


def test_lsmn_show_and_eval_under_an_edited_routing(toy_run, tmp_path, capsys):
    assert main(["show", str(toy_run.path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["scheme"] == "toy" and set(shown["metrics"]) == {"digit", "parity", "position"}
    doc, arrays = toy_run.routing()
    doc["gains"]["digit"] = [0.0] * len(doc["gains"]["digit"])  # digit's blocks add nothing
    routing.write(tmp_path / "edit", doc, arrays)
    assert main(["eval", str(toy_run.path), "--routing", str(tmp_path / "edit"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert metrics["digit"]["test_delta"] != 0
    assert metrics["parity"]["test_delta"] == 0 and metrics["position"]["test_delta"] == 0
    doc["gains"]["digit"] = ["x"] * len(doc["gains"]["digit"])
    routing.write(tmp_path / "bad", doc, arrays)
    assert main(["eval", str(toy_run.path), "--routing", str(tmp_path / "bad")]) == 2
    assert "gains of digit: expected 2 finite numbers" in capsys.readouterr().err


def test_every_app_page_renders_the_run(toy_run, monkeypatch):
    import app.state

    monkeypatch.setattr(app.state, "DEFAULT_RUNS", str(toy_run.path.parent))
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=APP_PATIENCE).run()
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception and not at.error, (page, at.exception, [e.value for e in at.error])
        assert at.title and (toy_run.name in at.title[0].value or page == "views/compare.py"), page
    at.switch_page("views/edit.py").run()
    assert any("no per-task routing to edit" in i.value for i in at.info)
