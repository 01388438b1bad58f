"""Unsupervised domain adaptation (lsmn adapt): only the target's mixture weights (or the input
adapter) train, towards the sources' feature moments, and the target's labels never enter training."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import lsmn_core.training.finetune
from helpers import REPO, tiny_config, spec_of
from lsmn.cli import main
from lsmn_core.training.adapt import AdaptPlan, adapt, domain_tasks, moment_distance
from lsmn_core.errors import ConfigError
from lsmn_core.store.runs import open_run
from lsmn_core.training.trainer import train

SOURCES = [{"name": f"digit_{d}", "dataset": "digits", "target": "digit", "domain": d}
           for d in ("original", "blurred")] + [{"name": "parity_original", "dataset": "digits", "target": "parity"}]
MIXTURE = {"kind": "mixture", "templates": 3}
STEPS = {"steps": 40, "batch_size": 16, "eval_every": 20, "device": "cpu"}


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    config = tiny_config(tasks=SOURCES, scheme=MIXTURE, model={"width": 16, "depth": 3}, train=STEPS)
    return open_run(train(config, tmp_path_factory.mktemp("parent"), quiet=True))


def test_moment_distance_is_zero_for_equal_moments_and_sums_the_orders():
    a = torch.tensor([[1.0, 0.0], [3.0, 2.0]])  # means (2, 1), second moments (5, 2)
    assert moment_distance(a, [a.flip(0)], 2) == 0
    b = torch.zeros(2, 2)
    assert torch.isclose(moment_distance(a, [b], 2), torch.tensor(5**0.5 + 29**0.5))
    assert torch.isclose(moment_distance(a, [a, b], 1), torch.tensor(5**0.5 / 2))  # averaged over sources


def test_only_the_target_s_mixture_weights_change_from_the_source_s(parent, tmp_path):
    child = open_run(adapt(parent, AdaptPlan("edges", steps=30), tmp_path, "cpu"))
    before, after = load_file(parent.path / "model.safetensors"), load_file(child.path / "model.safetensors")
    assert child.task_names == [*parent.task_names, "digit_edges"]
    for name, value in before.items():
        assert torch.equal(after[name][: value.shape[0]] if name == "body.xi" else after[name], value), name
    assert torch.equal(after["heads.digit_edges.linear.weight"], before["heads.digit_original.linear.weight"])
    assert not torch.equal(after["body.xi"][3], before["body.xi"][0])  # trained, from the source's
    report = child.summary()["adapt"]
    assert report["trainable"] == 3 * 3 and report["aligned_to"] == ["digit_original", "digit_blurred"]
    assert report["source"] == "digit_original" and child.meta["parent"] == parent.id
    distances = [m["value"] for m in child.metrics() if m["phase"] == "adapt"]
    assert len(distances) == 2 and all(d > 0 for d in distances)  # logged at steps 20 and 30


def test_the_encoder_baseline_changes_only_the_input_adapter(parent, tmp_path):
    child = open_run(adapt(parent, AdaptPlan("edges", train="encoder", steps=10), tmp_path, "cpu"))
    before, after = load_file(parent.path / "model.safetensors"), load_file(child.path / "model.safetensors")
    changed = {n for n, v in before.items() if not torch.equal(after[n][: v.shape[0]], v)}
    assert changed and all(n.startswith("encoders.") for n in changed)
    encoder = sum(v.numel() for n, v in before.items() if n.startswith("encoders."))
    assert child.summary()["adapt"]["trainable"] == encoder


def test_the_target_s_labels_never_enter_training(parent, tmp_path, monkeypatch):
    plain = open_run(adapt(parent, AdaptPlan("edges", steps=20), tmp_path / "plain", "cpu"))
    load_tasks = lsmn_core.training.finetune.load_tasks

    def wrong_labels(tasks, data, *cache):  # the target's labels shifted by one class in every split
        loaded = load_tasks(tasks, data, *cache)
        target = loaded[-1]
        splits = {s: (x, (y + 1) % 10) for s, (x, y) in target.splits.items()}
        return [*loaded[:-1], dataclasses.replace(target, splits=splits)]

    monkeypatch.setattr(lsmn_core.training.finetune, "load_tasks", wrong_labels)
    shifted = open_run(adapt(parent, AdaptPlan("edges", steps=20), tmp_path / "shifted", "cpu"))
    weights = [load_file(r.path / "model.safetensors") for r in (plain, shifted)]
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])
    accuracy = [r.summary()["metrics"]["digit_edges"]["test"] for r in (plain, shifted)]
    assert accuracy[0] != accuracy[1]  # the labels were read: to evaluate, and only there


@pytest.mark.parametrize("plan, message", [
    (AdaptPlan("blurred"), "already trains on the 'blurred' domain"),
    (AdaptPlan("edges", source="nothing"), "no task 'nothing'"),
    (AdaptPlan("edges", train="all"), "'routing' or 'encoder'"),
    (AdaptPlan("edges", steps=0), "steps must be"),
    (AdaptPlan("sideways"), "unknown domain 'sideways'")])
def test_a_plan_that_cannot_apply_is_refused_before_any_run_is_written(parent, tmp_path, plan, message):
    with pytest.raises(Exception, match=message):
        adapt(parent, plan, tmp_path, "cpu")
    assert not any(tmp_path.iterdir())


def test_a_run_without_mixture_weights_adapts_only_its_input_adapter(tmp_path):
    config = tiny_config(tasks=SOURCES[:2], scheme={"kind": "hard"}, model={"width": 16, "depth": 2}, train=STEPS)
    hard = open_run(train(config, tmp_path / "hard", quiet=True))
    with pytest.raises(ConfigError, match="no mixture weights to adapt; use train 'encoder'"):
        adapt(hard, AdaptPlan("edges"), tmp_path / "children", "cpu")
    child = open_run(adapt(hard, AdaptPlan("edges", train="encoder", steps=5), tmp_path / "children", "cpu"))
    assert child.status == "done"


def test_the_command_adapts_and_says_before_and_after(parent, tmp_path, capsys):
    main(["adapt", str(parent.path), "--target-domain", "edges", "--steps", "5", "--out", str(tmp_path), "--quiet"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("digit_edges: test accuracy ") and "9 parameters (routing)" in lines[1]
    assert main(["adapt", str(parent.path), "--target-domain", "original", "--out", str(tmp_path)]) == 2
    assert "already trains on the 'original' domain" in capsys.readouterr().err


def test_the_adapt_study_tables_each_block(tmp_path):
    import yaml

    (tmp_path / "adapt.yaml").write_text(yaml.safe_dump({
        "name": "adapt", "seed": 0, "tasks": SOURCES[:2], "model": {"width": 16, "depth": 2},
        "scheme": MIXTURE, "train": {"steps": 10, "batch_size": 16, "eval_every": 10}}))
    from lsmn.studies import adapt_study

    table = adapt_study(seeds=(0,), configs=tmp_path, blocks=("mlp",), steps=3).splitlines()
    assert table[0] == "| block | target | no adaptation | mixture weights only | input adapter only |"
    cells = table[2].split(" | ")
    assert cells[0] == "| mlp" and cells[1] == "`edges`" and "(6)" in cells[3]
    assert np.isfinite(float(cells[2].split(" ± ")[0]))


def test_the_edit_page_adapts_a_sample_run_in_the_background(monkeypatch, tmp_path):
    import time

    from streamlit.testing.v1 import AppTest

    import app.state
    from helpers import APP_PATIENCE

    monkeypatch.setenv("LSMN_RUNS", str(tmp_path))  # a sample run's children go to the user's runs folder
    monkeypatch.setattr(app.state, "DEFAULT_RUNS", str(REPO / "sample_runs"))
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=APP_PATIENCE).run()
    at.switch_page("views/edit.py").run()
    picker = at.sidebar.selectbox(key="run_select")
    picker.select(next(label for label in picker.options if label.startswith("digits-mixture "))).run()
    assert any(h.value == "Adapt to an unlabelled input domain" for h in at.subheader)
    domain = next(s for s in at.selectbox if (s.key or "").startswith("adapt_domain_"))
    assert "original" not in domain.options and "edges" in domain.options  # the run's own domain is not offered
    domain.select("edges").run()
    next(n for n in at.number_input if (n.key or "").startswith("adapt_steps_")).set_value(10).run()
    next(b for b in at.button if b.label == "Adapt").click().run()
    job = at.session_state["job"]
    while job.running:  # until it exits, however loaded the machine
        time.sleep(0.5)
    assert job.returncode == 0, job.output()
    (child,) = [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    child.rename(tmp_path / ".moved")  # a job that ended well but whose new run is gone: said so, no success
    at.run()
    assert any("ended, but no new run of digits-mixture appeared" in e.value for e in at.error), at.error
    (tmp_path / ".moved").rename(child)
    at.run()
    assert any(s.value.startswith("Adapted: new run") for s in at.success), [e.value for e in at.error]
    assert open_run(child).summary()["adapt"]["target"] == "digit_edges"
    next(b for b in at.button if b.label == "Open the new run").click().run()
    assert any(h.value == "Adapted from digits-mixture" for h in at.subheader)
    assert any("was adapted without its labels by moment matching" in m.value for m in at.markdown)
    assert any("Dev metric during domain adaptation" in spec_of(c) for c in at.get("plotly_chart"))


@pytest.mark.parametrize("hostile", [
    {"aligned_to": 5, "target": {"a": 1}, "trainable": "many", "target_test_before": "NaN"},
    {"aligned_to": ["x" * 10**6], "target": "digit_edges", "trainable": 10**400, "source": None}, "not a dict"])
def test_an_adapted_run_s_overview_survives_a_hostile_adapt_report(parent, tmp_path, monkeypatch, hostile):
    import shutil

    from streamlit.testing.v1 import AppTest

    import app.state
    from helpers import APP_PATIENCE, REPO

    child = adapt(parent, AdaptPlan("edges", steps=3), tmp_path, "cpu")
    shutil.copytree(parent.path, tmp_path / parent.path.name)
    summary = json.loads((child / "summary.json").read_text())
    summary["adapt"] = hostile
    (child / "summary.json").write_text(json.dumps(summary))
    monkeypatch.setenv("LSMN_RUNS", str(tmp_path))
    monkeypatch.setattr(app.state, "DEFAULT_RUNS", str(tmp_path))
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=APP_PATIENCE).run()
    picker = at.sidebar.selectbox(key="run_select")
    picker.select(next(label for label in picker.options if label.startswith(child.name))).run()
    assert not at.exception
    headings = [h.value for h in at.subheader]
    assert f"{'Adapted' if isinstance(hostile, dict) else 'Retrained'} from {parent.id}" in headings
    assert all(len(m.value) < 2000 for m in at.markdown)


def test_a_run_on_a_checkpoint_is_refused_in_one_line_and_the_page_offers_nothing(tmp_path, capsys):
    sample = open_run(REPO / "sample_runs" / "fashion-independent")  # digits images, on FashionConv
    assert domain_tasks(sample) == []
    assert main(["adapt", str(sample.path), "--target-domain", "rotated", "--out", str(tmp_path)]) == 2
    assert "is on a checkpoint" in capsys.readouterr().err and not list(tmp_path.iterdir())
