"""The app on real runs, through Streamlit's AppTest (no browser)."""

import json
import shutil
from pathlib import Path

import pytest

from helpers import REPO, spec_of
from helpers import start_app as start
from lsmn_core.store.runs import open_run



DIGITS_TASKS = ["digit", "parity", "ge5", "loops", "position"]


@pytest.mark.parametrize("sample, chart", [
    ("digits-sparse", "Mask overlap ratio"), ("digits-hard", None), ("digits-independent", None),
    ("digits-mann", "Mask overlap ratio"), ("digits-moe", ("Expert usage", "Expert specialisation per layer")),
    ("digits-mixture", "Signatures"), ("domains-mixture", "Signatures"),
    ("kang-hyper", "Hypermodule of every block location"), ("crossmodal-hyper", "Alignment search"),
    ("fashion-independent", ("How far each task moved each layer", "Cosine similarity of the task vectors")),
    ("fashion-packnet", ("How PackNet packed the tasks", "What pruning to its share cost each task")),
    ("fashion-polytropon", "Signatures")])
def test_overview_shows_each_sample_run(monkeypatch, sample, chart):
    at = start(monkeypatch, REPO / "sample_runs")
    assert not at.exception
    picker = at.sidebar.selectbox(key="run_select")
    picker.select(next(label for label in picker.options if label.startswith(sample + " "))).run()
    assert not at.exception and not at.error
    assert at.title[0].value == sample
    table = at.dataframe[0].value
    if sample.startswith("digits"):
        assert list(table["task"]) == DIGITS_TASKS
        baselines = [c for c in table.columns if c.startswith("test, ")]
        expected = ({"test, independent (digits-independent)", "test, hard (digits-hard)"}
                    - {f"test, {sample[7:]} ({sample})"})
        assert set(baselines) == expected
    assert table["test"].between(0, 1).all() and len(table) == len(set(table["task"]))
    charts = [spec_of(c) for c in at.get("plotly_chart")]
    if chart:
        for title in chart if isinstance(chart, tuple) else (chart,):
            assert any(title in spec for spec in charts), title
    else:
        assert any("no per-task masks or signatures" in i.value for i in at.info)


def test_an_empty_runs_folder_lists_the_sample_runs_beside_it(monkeypatch, tmp_path):
    at = start(monkeypatch, tmp_path)
    assert not at.exception
    assert any("No runs in" in c.value and "sample runs are listed" in c.value for c in at.sidebar.caption)
    options = at.sidebar.selectbox(key="run_select").options
    assert options and all(o.endswith(" · sample") for o in options)
    assert at.sidebar.selectbox(key="run_select").value.startswith("digits-sparse ")  # the samples' landing run


def test_a_run_of_the_folder_hides_the_sample_of_the_same_id_and_is_listed_first(monkeypatch, tmp_path):
    shutil.copytree(REPO / "sample_runs" / "digits-sparse", tmp_path / "digits-sparse")
    at = start(monkeypatch, tmp_path)
    options = at.sidebar.selectbox(key="run_select").options
    assert options[0].startswith("digits-sparse ") and not options[0].endswith(" · sample")
    assert sum(o.startswith("digits-sparse ") for o in options) == 1
    assert at.title[0].value == "digits-sparse"  # the landing run is the folder's own


def test_nothing_to_list_explains_what_to_do(monkeypatch, tmp_path):
    import app.state

    monkeypatch.setattr(app.state, "SAMPLES", tmp_path / "no-samples")
    at = start(monkeypatch, tmp_path)
    assert not at.exception
    assert any("No runs here yet" in i.value for i in at.info)


def test_retrains_of_a_sample_run_go_to_the_user_runs_folder(monkeypatch, tmp_path):
    from app.state import writable_runs

    monkeypatch.setenv("LSMN_RUNS", str(tmp_path / "mine"))
    assert writable_runs(open_run(REPO / "sample_runs" / "digits-sparse")) == (tmp_path / "mine").resolve()
    shutil.copytree(REPO / "sample_runs" / "digits-sparse", tmp_path / "elsewhere" / "digits-sparse")
    assert writable_runs(open_run(tmp_path / "elsewhere" / "digits-sparse")) == (tmp_path / "elsewhere").resolve()
    monkeypatch.delenv("LSMN_RUNS")
    assert writable_runs(open_run(REPO / "sample_runs" / "digits-sparse")) == (Path.home() / ".lsmn" / "runs").resolve()
    monkeypatch.setenv("LSMN_RUNS", str(REPO / "sample_runs"))  # the samples as the user's folder: never written
    assert writable_runs(open_run(REPO / "sample_runs" / "digits-sparse")) == (Path.home() / ".lsmn" / "runs").resolve()


def test_a_corrupt_run_is_skipped_with_a_warning(monkeypatch, tmp_path, sparse_run):
    shutil.copytree(sparse_run, tmp_path / "good")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text("{not json")
    at = start(monkeypatch, tmp_path)
    assert not at.exception
    assert any("Skipped bad" in w.value for w in at.sidebar.warning)
    assert at.title[0].value == "tiny"


def test_a_run_with_damaged_masks_shows_an_error_not_a_crash(monkeypatch, tmp_path, sparse_run):
    shutil.copytree(sparse_run, tmp_path / "run")
    (tmp_path / "run" / "routing.safetensors").write_bytes(b"garbage")
    at = start(monkeypatch, tmp_path)
    assert not at.exception
    assert any("Cannot read the run's routing" in e.value for e in at.error)


def open_page(monkeypatch, page, sample):
    at = start(monkeypatch, REPO / "sample_runs")
    at.switch_page(page).run()
    picker = at.sidebar.selectbox(key="run_select")
    picker.select(next(label for label in picker.options if label.startswith(sample + " "))).run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("sample", ["digits-sparse", "digits-mann"])
def test_masks_page_on_masked_runs(monkeypatch, sample):
    at = open_page(monkeypatch, "views/masks.py", sample)
    specs = [spec_of(c) for c in at.get("plotly_chart")]
    for title in ("Mask overlap ratio", "Density per block", "Overlap ratio per block", "Weights used by exactly",
                  "which tasks use each weight"):
        assert any(title in s for s in specs), title
    per_block = json.loads(next(s for s in specs if "Overlap ratio per block" in s))["data"][0]
    assert per_block["texttemplate"] == "%{y:.2f}" and len(per_block["y"]) == 4  # labelled, even at 0 (mann)
    at.radio[0].set_value("clustered by overlap").run()
    assert not at.exception
    at.selectbox(key=f"mask_param_{sample}").select("body.blocks.3.w_out").run()
    assert not at.exception and any("body.blocks.3.w_out" in spec_of(c) for c in at.get("plotly_chart"))


def test_masks_page_explains_runs_without_masks(monkeypatch):
    at = open_page(monkeypatch, "views/masks.py", "digits-mixture")
    assert any("has no per-task masks" in i.value for i in at.info)


def test_signatures_page(monkeypatch):
    at = open_page(monkeypatch, "views/signatures.py", "domains-mixture")
    specs = [spec_of(c) for c in at.get("plotly_chart")]
    assert any("Signatures: template per layer" in s for s in specs)
    assert any("mixture weights per layer" in s for s in specs) and any("Signature similarity" in s for s in specs)
    orders = at.dataframe[0].value
    assert set(orders["task"]) == {"digit_original", "digit_blurred", "digit_edges", "parity_original",
                                   "parity_blurred", "parity_edges"}
    at.selectbox(key="signature_task_domains-mixture").select("parity_edges").run()
    assert not at.exception
    assert any("parity_edges: mixture weights" in spec_of(c) for c in at.get("plotly_chart"))


def test_compare_page(monkeypatch):
    at = start(monkeypatch, REPO / "sample_runs")
    at.switch_page("views/compare.py").run()
    at.multiselect(key="compare_runs").set_value(["digits-hard", "digits-sparse", "digits-mann"]).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table.columns) == ["task", "metric", "digits-hard test", "digits-sparse test", "digits-mann test",
                                   "digits-sparse change", "digits-mann change"]
    assert len(table) == 5
    assert (table["digits-mann change"] == table["digits-mann test"] - table["digits-hard test"]).all()
    overlaps = [c for c in at.get("plotly_chart") if "Mask overlap ratio" in spec_of(c)]
    assert len(overlaps) == 2  # sparse and mann have masks, hard does not


@pytest.mark.parametrize("sample, depth", [("digits-mixture", 8), ("fashion-polytropon", 4)])
def test_edit_page_evaluates_a_module_order(monkeypatch, sample, depth):
    at = open_page(monkeypatch, "views/edit.py", sample)
    orders = at.dataframe[0].value  # the signature editor (AppTest shows data editors as dataframes)
    assert list(orders.index) == DIGITS_TASKS and list(orders.columns) == [f"layer {l}" for l in range(depth)]
    at.button[0].click().run()  # Evaluate, unedited: every change is zero
    assert not at.exception and not at.error
    table = at.dataframe[1].value
    assert list(table["task"]) == DIGITS_TASKS and table["test change"].abs().max() < 1e-9


@pytest.mark.parametrize("sample, first_column", [
    ("digits-sparse", "block 0"), ("digits-mann", "block 0"), ("digits-moe", "expert 0"), ("kang-hyper", "task")])
def test_edit_page_shows_an_editor_for_each_routed_scheme(monkeypatch, sample, first_column):
    at = open_page(monkeypatch, "views/edit.py", sample)
    assert not at.error and at.dataframe[0].value.columns[0] == first_column


def test_edit_page_explains_unroutable_schemes(monkeypatch):
    at = open_page(monkeypatch, "views/edit.py", "digits-hard")
    assert any("no per-task routing to edit" in i.value for i in at.info)


@pytest.mark.parametrize("sample", ["digits-sparse", "digits-moe", "domains-mixture", "crossmodal-hyper",
                                    "kang-hyper"])
def test_attributions_page(monkeypatch, sample):
    at = open_page(monkeypatch, "views/attributions.py", sample)
    specs = [spec_of(c) for c in at.get("plotly_chart")]
    assert any("attributed for each task" in s for s in specs) and any("Module importance" in s for s in specs)
    grid = next((json.loads(s) for s in specs if "attributed for each task" in s and '"RdBu"' in s), None)
    if grid:  # image tasks: one colour scale for every map, one colour bar, square pixels, the true label
        maps = [t for t in grid["data"] if t.get("zmin") is not None]
        assert len({(t["zmin"], t["zmax"]) for t in maps}) == 1 and sum(t.get("showscale", True) for t in maps) == 1
        assert all(grid["layout"][k].get("scaleanchor") for k in grid["layout"] if k.startswith("yaxis"))
        titles = [a["text"] for a in grid["layout"]["annotations"]]
        assert sum(" · true " in t for t in titles) == 1  # the task whose dev inputs are shown
    bars = next((json.loads(s) for s in specs if "(per feature)" in s), None)
    assert (bars is not None) == (sample == "kang-hyper")  # vector tasks: grouped bars, a trace per task
    if bars:
        assert bars["layout"]["barmode"] == "group" and len(bars["data"]) >= 2
        assert sum(" · true " in t["name"] for t in bars["data"]) == 1
    at.selectbox(key="attr_method").select("Saliency").run()
    assert not at.exception and not at.error


def test_sharing_graph_page(monkeypatch):
    at = open_page(monkeypatch, "views/sharing.py", "kang-hyper")
    assert not at.exception and not at.error
    specs = [spec_of(c) for c in at.get("plotly_chart")]
    for title in ("Alignment search", "Tasks, blocks and hypermodules", "used exclusively", "How often"):
        assert any(title in s for s in specs), title
    search = json.loads(next(s for s in specs if "Alignment search" in s))
    losses = search["data"][1]["y"]
    ticks = search["layout"]["yaxis"]["tickvals"]  # the log axis spans the losses, its labels written out
    assert ticks[0] <= min(losses) and ticks[-1] >= max(losses) and "0.1" in search["layout"]["yaxis"]["ticktext"]
    assert at.metric[1].value == "3 of 10" and at.metric[3].value == "3"  # the 3 true groups
    at.slider(key="generation_kang-hyper").set_value(0).run()  # the random starting alignment
    assert not at.exception and int(at.metric[1].value.split()[0]) > 3


@pytest.mark.parametrize("sample, expected", [("digits-moe", ("Expert usage", "Expert specialisation per layer")),
                                              ("digits-hard", None)])
def test_sharing_graph_page_on_other_schemes(monkeypatch, sample, expected):
    at = open_page(monkeypatch, "views/sharing.py", sample)
    assert not at.exception
    if expected:
        for title in expected:
            assert any(title in spec_of(c) for c in at.get("plotly_chart")), title
    else:
        assert any("shares nothing the graph can draw" in i.value for i in at.info)


PAGES = ["views/overview.py", "views/masks.py", "views/signatures.py", "views/sharing.py", "views/attributions.py",
         "views/edit.py", "views/compare.py"]


def pick_sample(at, sample):
    picker = at.sidebar.selectbox(key="run_select")
    picker.select(next(label for label in picker.options if label.startswith(sample + " "))).run()
    return at


def sidebar_pages(at) -> list[str]:
    return [link.proto.label for link in at.sidebar.get("page_link")]


TITLES = {"views/overview.py": "Overview", "views/masks.py": "Masks and overlap", "views/signatures.py": "Signatures",
          "views/sharing.py": "Sharing graph", "views/attributions.py": "Attributions",
          "views/edit.py": "Edit and retrain", "views/compare.py": "Compare"}


@pytest.mark.parametrize("sample", sorted(p.name for p in (REPO / "sample_runs").iterdir() if p.is_dir()))
def test_every_page_of_every_sample_run_shows_it_or_is_not_listed(monkeypatch, tmp_path, sample):
    """As on a fresh machine, with no checkpoint installed in the models folder: a page the sidebar lists
    for the run shows a figure or table about it; one it leaves out, opened anyway (a bookmark), says why
    in one line and offers runs that it can show."""
    monkeypatch.setenv("LSMN_MODELS", str(tmp_path / "no-models"))
    at = pick_sample(start(monkeypatch, REPO / "sample_runs"), sample)
    listed = sidebar_pages(at)
    assert listed[0] == "Overview" and "Compare" in listed
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception and not at.error, (page, at.exception, [e.value for e in at.error])
        assert at.sidebar.selectbox(key="run_select").value.startswith(sample + " "), page
        assert sidebar_pages(at) == listed, page  # the links follow the run, not the page
        if TITLES[page] in listed:
            assert at.title and (sample in at.title[0].value or page == "views/compare.py"), page
            assert at.get("plotly_chart") or at.dataframe or page == "views/edit.py", page
        else:
            assert at.title[0].value == TITLES[page] and len(at.info) == 1 and sample in at.info[0].value, page
            assert at.button, page  # some sample run can show every page
    assert len(listed) >= 3


def test_a_page_that_cannot_show_the_run_switches_to_one_that_it_can(monkeypatch):
    at = start(monkeypatch, REPO / "sample_runs")  # lands on digits-sparse
    at.switch_page("views/signatures.py").run()
    assert "Signatures" not in sidebar_pages(at)
    offered = [b.label for b in at.button]
    assert offered and all("(mixture)" in label for label in offered), offered
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="run_select").value.startswith(offered[0].split(" (")[0] + " ")
    assert "Signatures" in sidebar_pages(at) and any("Signature" in spec_of(c) for c in at.get("plotly_chart"))


@pytest.mark.parametrize("address, allowed", [("0.0.0.0", False), ("", False), ("0.0.0.0", True)])
def test_the_app_refuses_to_serve_beyond_this_machine_unless_told(monkeypatch, address, allowed):
    from streamlit import config

    monkeypatch.setattr(config, "_config_options", None)  # a fresh copy of the options, loaded again after the test
    config.set_option("server.address", address)
    if allowed:
        monkeypatch.setenv("LSMN_ALLOW_REMOTE", "1")
    at = start(monkeypatch, REPO / "sample_runs")
    assert not at.exception
    refused = [e.value for e in at.error if "anyone who can reach it may read your files" in e.value]
    assert bool(refused) != allowed and bool(at.dataframe) == allowed


def test_a_retrained_run_s_curves_show_its_fine_tuning(sparse_run, tmp_path):
    from app.figures import training_curves
    from lsmn_core.training.finetune import FinetunePlan, finetune

    child = open_run(finetune(open_run(sparse_run), FinetunePlan(10, "all"), tmp_path, device="cpu"))
    figure = training_curves(child.metrics())
    assert figure.layout.title.text == "Dev metric during fine-tuning"
    assert len(figure.data) == 3 and all(len(trace.x) > 0 for trace in figure.data)
    assert training_curves(open_run(sparse_run).metrics()).layout.title.text == "Dev metric during multi-task training"


@pytest.mark.parametrize("tasks", [3, 40])
def test_the_hypermodule_colour_bar_names_only_as_many_hypermodules_as_it_has_room_for(tasks):
    """64 hypermodules on a figure of 3 task rows once printed 22 names over one another on a colour
    bar a hundred pixels tall; each name needs about 14 px of the bar (the figure's height less its
    title and axes, about 180 px)."""
    from app.schemes.hyper import alignment_heatmap

    alignment = {f"task{t}": [(t * 7 + i) % 64 for i in range(100)] for t in range(tasks)}
    figure = alignment_heatmap(alignment, "Hypermodule of every block location")
    bar = figure.data[0].colorbar
    assert 2 <= len(bar.tickvals) <= (figure.layout.height - 180) / 14
    assert bar.ticktext[0] == "H0" and len(bar.ticktext) == len(bar.tickvals)
    assert figure.layout.height >= 300  # rows tall enough to tell the colours apart


def test_the_app_opens_on_a_small_run_and_compare_on_the_runs_of_its_tasks(monkeypatch):
    at = start(monkeypatch, REPO / "sample_runs")
    # the newest of <= 10 tasks of the Studio's own networks: not the 110-task scale-sparse, nor the newer
    # samples on a checkpoint, which a fresh machine may not have
    assert at.sidebar.selectbox(key="run_select").value.startswith("digits-sparse ")
    assert at.title[0].value == "digits-sparse"
    at.sidebar.selectbox(key="run_select").select(next(o for o in at.sidebar.selectbox(key="run_select").options
                                                       if o.startswith("digits-sparse "))).run()
    at.switch_page("views/compare.py").run()
    # the picker cuts the label short; below it, the scheme, status and date in full
    assert any(c.value.startswith("sparse · done · 2026-12-03 ") for c in at.sidebar.caption)
    # the sidebar run first, then the newest of the same tasks on the same data (not FashionConv's few labels)
    assert at.multiselect(key="compare_runs").value == ["digits-sparse", "digits-mixture", "digits-moe", "digits-mann"]


def test_a_retrained_run_s_overview_shows_its_parent_the_edit_and_each_task_s_change(sparse_run, tmp_path,
                                                                                    monkeypatch):
    from lsmn_core.store import routing
    from lsmn_core.training.finetune import FinetunePlan, finetune

    parent_path = tmp_path / sparse_run.name
    shutil.copytree(sparse_run, parent_path)
    parent = open_run(parent_path)
    doc, arrays = parent.routing()
    edited = routing.edit_masks(doc, arrays, {("digit", 0): "clear"})  # digit: no weight of block 0
    child = open_run(finetune(parent, FinetunePlan(5, "all", routing=(doc, edited)), tmp_path, device="cpu"))
    at = start(monkeypatch, tmp_path)
    picker = at.sidebar.selectbox(key="run_select")
    picker.select(next(o for o in picker.options if o.startswith(child.id + " "))).run()
    assert not at.exception
    assert any(h.value == f"Retrained from {parent.id}" for h in at.subheader)
    metrics, changes = at.dataframe[1].value, at.dataframe[2].value  # after the Tasks table
    assert list(metrics["task"]) == parent.task_names and "change" in metrics.columns
    assert list(changes["task"]) == ["digit"] and changes["routing"].iloc[0] == "masks"
    assert 0 < changes["changed"].iloc[0] <= changes["of"].iloc[0]


PAGES = ["views/overview.py", "views/masks.py", "views/signatures.py", "views/sharing.py", "views/attributions.py",
         "views/compare.py"]


@pytest.mark.parametrize("sample", ["digits-sparse", "digits-moe", "digits-mixture", "kang-hyper", "crossmodal-hyper"])
def test_every_figure_is_explained_in_one_line_below_it(monkeypatch, sample):
    at = start(monkeypatch, REPO / "sample_runs")
    picker = at.sidebar.selectbox(key="run_select")
    picker.select(next(label for label in picker.options if label.startswith(sample + " "))).run()
    seen = 0
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        charts = [json.loads(spec_of(c)) for c in at.get("plotly_chart")]
        captions = {c.value for c in at.caption}
        for chart in charts:
            caption = chart["layout"].get("meta", {}).get("caption", "")
            assert 40 < len(caption) < 400 and caption in captions, (page, chart["layout"].get("title"))
        seen += len(charts)
    assert seen >= 6


@pytest.mark.parametrize("sample", ["wordnet-minilm", "wordnet-vectors"])
def test_a_sample_whose_checkpoint_is_not_installed_shows_its_masks_and_how_to_install_it(monkeypatch, capsys,
                                                                                         tmp_path, sample):
    """As on a fresh machine (no `make models`): its masks are drawn by the checkpoint's names; what
    needs the checkpoint (attributions, lsmn eval) says how to install it. Every page renders (above)."""
    from lsmn.cli import main

    monkeypatch.setenv("LSMN_MODELS", str(tmp_path / "no-models"))
    at = pick_sample(start(monkeypatch, REPO / "sample_runs"), sample)
    at.switch_page("views/masks.py").run()
    assert any("encoder.layer" in spec_of(c) for c in at.get("plotly_chart"))
    at.switch_page("views/attributions.py").run()
    assert any("lsmn models install all-MiniLM-L6-v2" in i.value for i in at.info), [i.value for i in at.info]
    assert "Attributions" not in sidebar_pages(at)
    capsys.readouterr()
    assert main(["eval", str(REPO / "sample_runs" / sample)]) == 2
    assert "lsmn models install all-MiniLM-L6-v2" in capsys.readouterr().err


def test_a_sparse_run_s_overview_shows_the_imp_round_each_task_s_mask_came_from(monkeypatch):
    """digits-sparse's ge5 keeps every weight: the Overview shows that its first round (density 1) was
    its best on dev, among the rounds IMP ran for each task."""
    from app.schemes.sparse import pruning_rounds_figure

    at = start(monkeypatch, REPO / "sample_runs")  # lands on digits-sparse
    assert any("IMP rounds" in spec_of(c) for c in at.get("plotly_chart"))
    pruning = open_run(REPO / "sample_runs" / "digits-sparse").summary()["search"]["pruning"]
    figure = pruning_rounds_figure(pruning)
    stars = {trace.legendgroup: trace.x[0] for trace in figure.data if trace.marker.symbol == "star"}
    assert set(stars) == set(pruning) and stars["ge5"] == 1.0 and stars["digit"] < 0.1


def test_a_vectors_run_whose_fine_tunes_are_gone_says_so_on_every_page(monkeypatch, tmp_path):
    """Its checkpoint at hand (FashionConv ships with the Studio) but the run of fine-tunes gone: the
    pages that compute with the vectors say what is missing, the others draw what the run stored."""
    shutil.copytree(REPO / "sample_runs" / "fashion-vectors", tmp_path / "fashion-vectors")
    at = pick_sample(start(monkeypatch, tmp_path), "fashion-vectors")
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception and not at.error, (page, at.exception, [e.value for e in at.error])
    at.switch_page("views/attributions.py").run()
    assert any("fine-tunes fashion-independent it was imported from is gone" in i.value for i in at.info)
    assert "Attributions" not in sidebar_pages(at)


@pytest.mark.parametrize("sample", ["digits-sparse", "fashion-vectors", "scale-sparse"])
def test_the_sharing_graph_of_a_run_with_masks_by_layer_and_weakest_edge(monkeypatch, sample):
    """Tasks as nodes, an edge per pair by overlap (or a task vectors run's cosine), groups listed; a
    layer's graph is that layer's overlap; raising the weakest edge drops edges."""
    from analysis.overlap import intersections, pairwise_overlap

    at = open_page(monkeypatch, "views/sharing.py", sample)
    assert not at.error
    run = open_run(REPO / "sample_runs" / sample)

    def graph():
        spec = json.loads(next(spec_of(c) for c in at.get("plotly_chart") if "Which tasks share what" in spec_of(c)))
        hover = next(t for t in spec["data"] if t.get("marker", {}).get("opacity") == 0)
        return {tuple(text.split(": ")[0].split(" · ")): float(text.split(": ")[1]) for text in hover["text"]}

    edges = graph()
    tasks = run.task_names
    overlap = pairwise_overlap(intersections(run.masks()))
    (a, b), value = next(iter(edges.items()))
    assert value == pytest.approx(overlap[tasks.index(a), tasks.index(b)], abs=1e-3)
    if len(tasks) <= 12:
        assert len(edges) == len(tasks) * (len(tasks) - 1) // 2
    groups = at.dataframe[0].value  # every task in one group (a task on its own: a group of one)
    assert sorted(t for members in groups["members"] for t in members.split(", ")) == sorted(tasks)
    assert groups["tasks"].sum() == len(tasks) and list(groups["tasks"]) == sorted(groups["tasks"], reverse=True)
    at.selectbox(key=f"graph_layer_{run.id}_overlap of their masks").select("layer 1").run()
    layers = run.mask_layers()
    one_layer = pairwise_overlap(intersections({n: m for n, m in run.masks().items() if layers[n] == 1}))
    (a, b), value = next(iter(graph().items()))
    assert not at.exception and value == pytest.approx(one_layer[tasks.index(a), tasks.index(b)], abs=1e-3)
    slider = at.slider(key=f"graph_weakest_{run.id}_overlap of their masks_layer 1")
    slider.set_value(slider.max).run()
    assert 1 <= len(graph()) < len(edges)
    if sample == "fashion-vectors":
        at.radio(key=f"graph_measure_{run.id}").set_value("cosine similarity of their task vectors").run()
        cosine = run.summary()["vectors"]["cosine"]
        (a, b), value = next(iter(graph().items()))
        assert value == pytest.approx(cosine[tasks.index(a)][tasks.index(b)], abs=1e-3)
