"""Plugins from outside the repository: the example plugin package (examples/plugin), installed into
a temporary folder as pip leaves a package (its code and a .dist-info with entry_points.txt), trains
a run with its block, data set and scheme through the ordinary `lsmn train`, is shown by `lsmn show`,
evaluates an edited routing, is listed by `lsmn plugins`, and opens in every page of the app. A
broken plugin is listed with its reason while everything else works; two packages claiming one name
is an error naming both."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from helpers import APP_PATIENCE, PROCESS_PATIENCE, REPO, install, project, spec_of
from lsmn_core import plugins
from lsmn_core.datasets import DATASETS
from lsmn_core.errors import DataError
from lsmn_core.store import routing
from lsmn_core.store.runs import open_run

EXAMPLE = REPO / "examples" / "plugin"
PAGES = ["views/overview.py", "views/masks.py", "views/signatures.py", "views/sharing.py", "views/attributions.py",
         "views/edit.py", "views/compare.py"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The example plugin as its pyproject.toml declares it, and a plugin whose module is missing."""
    site = tmp_path_factory.mktemp("site")
    example = project(EXAMPLE)
    install(site, example["name"], example["version"], example["entry-points"], EXAMPLE / "lsmn_example_plugin")
    install(site, "broken-plugin", "0.1", {"lsmn.datasets": {"broken": "broken_plugin:load"}})
    return site


def lsmn(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "lsmn", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=PROCESS_PATIENCE)


@pytest.fixture(scope="module")
def plugin_run(site, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    trained = lsmn(site, "train", str(EXAMPLE / "example.yaml"), "--out", str(out), "--quiet",
                   "--set", "train.steps=200", "--set", "train.device=cpu", cwd=out)
    assert trained.returncode == 0, trained.stderr
    return Path(trained.stdout.split()[-1])


@pytest.fixture
def on_path(site):
    """The plugin folder on this process's path, every registry reading the entry points again."""
    import app.schemes

    sys.path.insert(0, str(site))
    plugins.refresh()
    app.schemes.plugin_failures.clear()
    yield
    sys.path.remove(str(site))
    plugins.refresh()
    app.schemes.plugin_failures.clear()


def test_lsmn_plugins_lists_the_built_ins_the_plugin_and_the_broken_one(site, tmp_path):
    listed = lsmn(site, "plugins", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    groups = {group: {row["name"]: row for row in rows} for group, rows in json.loads(listed.stdout).items()}
    assert set(groups) == set(plugins.GROUPS)
    assert groups["lsmn.schemes"]["sparse"]["package"] == "lsmn-studio"
    assert groups["lsmn.datasets"]["digits"]["package"] == "lsmn-studio"
    assert {name: row["package"] for name, row in groups["lsmn.merges"].items()} == dict.fromkeys(
        ["task_arithmetic", "ties", "dare", "dare_ties", "tall", "consensus", "tsv_m", "iso_c", "iso_cts", "tsv_c"],
        "lsmn-studio")
    assert {name for name, row in groups["lsmn.commands"].items() if row["problem"] is None} == {"vectors", "merge"}
    assert {name: row["package"] for name, row in groups["lsmn.pretrained"].items()} == {"hf": "lsmn-studio",
                                                                                         "class": "lsmn-studio"}
    for group, name in (("lsmn.schemes", "task_gains"), ("lsmn.blocks", "rezero"), ("lsmn.datasets", "rings"),
                        ("lsmn.app_views", "task_gains")):
        row = groups[group][name]
        assert (row["package"], row["version"], row["problem"]) == ("lsmn-example-plugin", "0.1.0", None), row
    broken = groups["lsmn.datasets"]["broken"]
    assert broken["package"] == "broken-plugin"
    assert broken["problem"] == "ModuleNotFoundError: No module named 'broken_plugin'"
    text = lsmn(site, "plugins", cwd=tmp_path).stdout
    assert "lsmn-example-plugin 0.1.0" in text and "FAILED: ModuleNotFoundError" in text
    assert "1 entry failed to load" in text


def test_a_run_of_the_plugin_s_block_data_set_and_scheme(site, plugin_run, tmp_path):
    shown = lsmn(site, "show", str(plugin_run), "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["scheme"] == "task_gains" and data["status"] == "done"
    assert {t: m["metric"] for t, m in data["metrics"].items()} == {"ring": "accuracy", "upper": "accuracy",
                                                                     "radius": "rmse"}
    assert data["metrics"]["ring"]["test"] > 0.6  # three rings, chance 1/3
    gains = data["routing"]["gains"]
    assert set(gains) == {"ring", "upper", "radius"} and any(g != 1.0 for row in gains.values() for g in row)
    text = lsmn(site, "show", str(plugin_run), cwd=tmp_path).stdout
    assert "gain per block" in text  # the scheme's own report, printed by the generic command
    config = json.loads((plugin_run / "run.json").read_text())["config"]
    assert config["model"]["block"] == "rezero"
    assert "rings, target ring" in json.loads((plugin_run / "run.json").read_text())["tasks"][0]["source"]

    doc = json.loads((plugin_run / "routing.json").read_text())
    doc["gains"]["ring"] = [0.0] * len(doc["gains"]["ring"])  # ring's blocks add nothing
    routing.write(tmp_path / "edit", doc, {})
    evaluated = lsmn(site, "eval", str(plugin_run), "--routing", str(tmp_path / "edit"), "--json", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)["metrics"]
    assert metrics["ring"]["test_delta"] != 0
    assert metrics["upper"]["test_delta"] == 0 and metrics["radius"]["test_delta"] == 0
    doc["gains"]["ring"] = ["x"] * len(doc["gains"]["ring"])
    routing.write(tmp_path / "bad", doc, {})
    refused = lsmn(site, "eval", str(plugin_run), "--routing", str(tmp_path / "bad"), cwd=tmp_path)
    assert refused.returncode == 2 and "gains of ring: expected 3 finite numbers" in refused.stderr


def test_training_goes_on_beside_a_broken_plugin_and_names_it_when_used(site, tmp_path):
    config = tmp_path / "mixed.yaml"
    config.write_text("name: beside\ntasks: [{name: ring, dataset: rings, target: ring}, "
                      "{name: parity, dataset: digits, target: parity}]\nmodel: {width: 16, depth: 1}\n"
                      "train: {steps: 20, eval_every: 10, device: cpu}\n")
    trained = lsmn(site, "train", str(config), "--out", str(tmp_path / "runs"), "--quiet", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    config.write_text(config.read_text().replace("dataset: rings, target: ring", "dataset: broken, target: x"))
    refused = lsmn(site, "train", str(config), "--out", str(tmp_path / "runs"), "--quiet", cwd=tmp_path)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert ("the dataset 'broken' of broken-plugin 0.1 (broken_plugin:load) failed to load: ModuleNotFoundError"
            in refused.stderr)
    assert len(list((tmp_path / "runs").iterdir())) == 1  # nothing was written for the refused run


def test_every_app_page_shows_the_plugin_s_run_and_the_sidebar_names_the_broken_plugin(plugin_run, on_path,
                                                                                       monkeypatch):
    import app.state
    from app.text import plain

    monkeypatch.setattr(app.state, "DEFAULT_RUNS", str(plugin_run.parent))
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=APP_PATIENCE).run()
    run = open_run(plugin_run)
    broken = plain("lsmn.datasets broken (broken-plugin 0.1): ModuleNotFoundError: No module named 'broken_plugin'")
    listed = [link.proto.label for link in at.sidebar.get("page_link")]
    assert {"Overview", "Attributions", "Edit and retrain", "Compare"} <= set(listed), listed
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception and not at.error, (page, at.exception, [e.value for e in at.error])
        shown = at.title[0].value if at.title else ""
        assert run.name in shown or page == "views/compare.py" or run.id in at.info[0].value, page  # or why not
        assert any(broken in w.value for w in at.sidebar.warning), page
    at.switch_page("views/overview.py").run()
    assert any("Gain of each task" in spec_of(chart) for chart in at.get("plotly_chart")), "the view's figure"
    assert not any("No app view is installed" in c.value for c in at.caption)
    at.switch_page("views/edit.py").run()
    editors = [frame.value for frame in at.dataframe]  # AppTest shows data editors as dataframes
    assert any(list(frame.columns) == ["block 0", "block 1", "block 2"] and list(frame.index) == run.task_names
               for frame in editors), "the plugin view's gains editor"


def test_a_scheme_without_a_view_gets_the_generic_pages_and_a_line_saying_so(monkeypatch, tmp_path):
    import app.state

    monkeypatch.setattr(app.state, "DEFAULT_RUNS", str(tmp_path))
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=APP_PATIENCE).run()
    at.sidebar.selectbox(key="run_select").select(next(o for o in at.sidebar.selectbox(key="run_select").options
                                                       if o.startswith("digits-hard"))).run()
    assert not at.exception and not at.error
    assert any("No app view is installed for the hard scheme" in c.value for c in at.caption)


def test_two_packages_claiming_one_name_is_an_error_naming_both(tmp_path):
    for name in ("twin-a", "twin-b"):
        install(tmp_path, name, "1.0", {"lsmn.datasets": {"twin": "lsmn_core.datasets.digits:load"}})
    sys.path.insert(0, str(tmp_path))
    plugins.refresh()
    try:
        with pytest.raises(DataError, match="the dataset 'twin' is claimed by two packages, twin-a 1.0 .* and twin-b "
                                            "1.0 .*; uninstall one of them"):
            DATASETS.get("twin", "task t")
        rows = [row for row in DATASETS.listing() if row.name == "twin"]
        assert {row.package for row in rows} == {"twin-a", "twin-b"}
        assert all("also claimed by" in row.problem for row in rows)
        assert DATASETS.get("digits")  # every other name still works
    finally:
        sys.path.remove(str(tmp_path))
        plugins.refresh()
