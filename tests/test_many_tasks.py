"""The app at any task count: the 110-task sample run and a 1,000-task run (configs/scale-1000.yaml's
tasks, trained for a few steps: the figures' size depends on the task count, not on training) render
every page, and their figures stay bounded: task x task heatmaps averaged past 150 tasks, curves as
a median and a band past 12 tasks, labels of weights' task sets short. (Their speed: `lsmn bench`.)"""

import json

import pytest
from streamlit.testing.v1 import AppTest

from helpers import APP_PATIENCE, REPO, spec_of
from lsmn.bench import THOUSAND_TASKS_BRIEFLY
from lsmn_core.config import load_config
from lsmn_core.store.runs import open_run
from lsmn_core.training.trainer import train

PAGES = ["views/overview.py", "views/masks.py", "views/signatures.py", "views/sharing.py", "views/attributions.py",
         "views/edit.py", "views/compare.py"]


@pytest.fixture(scope="module")
def thousand(tmp_path_factory):
    return train(load_config(REPO / "configs" / "scale-1000.yaml", THOUSAND_TASKS_BRIEFLY),
                 tmp_path_factory.mktemp("runs"), quiet=True)


def _charts(at) -> dict[str, dict]:
    return {c.proto.id: json.loads(spec_of(c)) for c in at.get("plotly_chart")}


def _cells(z) -> int:
    """A heatmap's cell count, as plotly sends it: nested lists or a typed array with its shape."""
    if isinstance(z, dict):
        rows, cols = (int(n) for n in str(z["shape"]).split(","))
        return rows * cols
    return len(z) * len(z[0])


def _title(chart) -> str:
    title = chart["layout"].get("title", {})
    return title.get("text", "") if isinstance(title, dict) else str(title)


@pytest.mark.parametrize("which", ["110 tasks", "1,000 tasks"])
def test_every_page_renders_many_tasks_with_bounded_figures(which, thousand, monkeypatch):
    run_dir = REPO / "sample_runs" / "scale-sparse" if which == "110 tasks" else thousand
    run = open_run(run_dir)
    n_tasks = len(run.task_names)
    assert n_tasks == (110 if which == "110 tasks" else 1000)
    import app.state

    monkeypatch.setattr(app.state, "DEFAULT_RUNS", str(run_dir.parent))
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=APP_PATIENCE)
    at.session_state["runs_folder"] = str(run_dir.parent)
    at.session_state["run_select"] = run.label
    at.run()
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception and not at.error, (page, [e.value for e in at.error])
        assert run.id in at.sidebar.selectbox(key="run_select").value
        for chart in _charts(at).values():
            assert len(json.dumps(chart)) < 4_000_000, (page, _title(chart))  # what the browser receives
            for trace in chart["data"]:
                if trace.get("type") == "heatmap":  # task x task: 150 x 150 at most; task x layer: a column each
                    assert _cells(trace["z"]) <= 150 * 150, (page, _title(chart))
            if _title(chart).startswith("Dev metric"):
                assert len(chart["data"]) <= 4, (page, len(chart["data"]))  # median and band per metric
            for trace in chart["data"]:
                for label in (trace.get("colorbar") or {}).get("ticktext") or []:
                    assert len(label) < 120, label
    at.switch_page("views/overview.py").run()
    overlap = next(c for c in _charts(at).values() if _title(c).startswith("Mask overlap ratio"))
    assert ("blocks of" in _title(overlap)) == (n_tasks > 150)
    assert ("mean over a block" in overlap["layout"]["meta"]["caption"]) == (n_tasks > 150)
    at.multiselect(key=f"curves_{run.id}").set_value([run.task_names[0], run.task_names[-1]]).run()
    curves = next(c for c in _charts(at).values() if _title(c).startswith("Dev metric"))
    assert {t["name"].split(" (")[0] for t in curves["data"]} >= {run.task_names[0], run.task_names[-1]}
