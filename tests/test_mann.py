import subprocess
import sys

import numpy as np
import pytest
import torch

from analysis.overlap import intersections, pairwise_overlap
from helpers import REPO, tiny_config
from lsmn_core.config import TaskConfig
from lsmn_core.errors import ConfigError, RunError
from lsmn_core.store.export import SparseInference, export_run, load_export
from lsmn_core.training.finetune import FinetunePlan, finetune
from lsmn_core.store.runs import open_run
from lsmn_core.training.trainer import train

MANN = {"kind": "mann", "keep": 0.2, "rounds": 2, "round_steps": 40}


@pytest.fixture(scope="module")
def mann_run(tmp_path_factory):
    return open_run(train(tiny_config(scheme=MANN), tmp_path_factory.mktemp("mann"), quiet=True))


def test_task_masks_never_overlap(mann_run):
    masks = mann_run.masks()
    assert not any((m.sum(0) > 1).any() for m in masks.values())
    overlap = pairwise_overlap(intersections(masks))
    assert np.allclose(overlap - np.eye(3), 0)
    for d in mann_run.summary()["density"].values():
        assert d == pytest.approx(0.2, abs=1e-3)  # RSN2 keeps the target fraction for every task


def test_each_task_runs_on_its_slice_alone_or_all_together(mann_run):
    model = mann_run.load_model().eval()
    x = torch.rand(5, 8, 8)
    together = model.forward_tasks(x)
    for t in range(3):
        assert torch.allclose(together[t], model(x, t), atol=1e-5)
    body_params = dict(model.body.named_parameters())
    assert body_params["blocks.0.w_in"].dim() == 2  # one shared tensor
    assert body_params["blocks.0.b_in"].shape[0] == 3  # biases are per task


def test_rsn2_one_shot_schedule(tmp_path):
    run = open_run(train(tiny_config(scheme={**MANN, "schedule": "one_shot", "keep": 0.3}), tmp_path, quiet=True))
    report = run.summary()["search"]["rsn2"]
    assert [round(r["free_before"], 2) for r in report.values()] == [1.0, 0.7, 0.4]
    assert all(r["density"] == pytest.approx(0.3, abs=1e-3) for r in report.values())


def test_adding_a_task_leaves_old_outputs_bit_identical(mann_run, tmp_path):
    new = TaskConfig(name="mod3", dataset="digits", target="mod3")
    child = open_run(finetune(mann_run, FinetunePlan(80, "new", [new]), tmp_path))
    x = torch.rand(7, 8, 8)
    old, grown = mann_run.load_model().eval(), child.load_model().eval()
    for t in range(3):
        assert torch.equal(old(x, t), grown(x, t))
    assert np.allclose(pairwise_overlap(intersections(child.masks())) - np.eye(4), 0)
    assert child.summary()["metrics"]["mod3"]["test"] > 0.6  # chance is 1/3
    assert child.meta["parent"] == mann_run.id


def test_shares_that_do_not_fit_in_one_body_are_refused_before_training(mann_run, tmp_path):
    with pytest.raises(ConfigError, match=r"scheme.keep: 3 tasks x 0.4 = 1.2 of the body.*keep at most 0.3333"):
        tiny_config(scheme={**MANN, "keep": 0.4})
    new = [TaskConfig(name=f"extra{i}", dataset="digits", target="mod3") for i in range(3)]  # 6 x 0.2 > 1
    with pytest.raises(ConfigError, match="scheme.keep: 6 tasks x 0.2"):
        finetune(mann_run, FinetunePlan(5, "new", new), tmp_path)


def test_adding_tasks_needs_a_scheme_that_isolates_them(sparse_run, tmp_path):
    new = TaskConfig(name="mod3", dataset="digits", target="mod3")
    with pytest.raises(ConfigError, match="cannot add tasks without changing the old ones"):
        finetune(open_run(sparse_run), FinetunePlan(5, "new", [new]), tmp_path)


def test_export_is_compact_and_reproduces_every_task_exactly(mann_run, tmp_path):
    sizes = export_run(mann_run, tmp_path / "compact.safetensors")
    assert sizes["bytes"] < sizes["dense_bytes"]
    model, exported = mann_run.load_model().eval(), load_export(tmp_path / "compact.safetensors")
    x = torch.rand(9, 8, 8)
    for t in range(3):
        assert torch.equal(model(x, t), exported(x, t))
        assert torch.allclose(SparseInference(exported, t)(x), model(x, t), atol=1e-5)


def test_export_of_a_sparse_sharing_run_with_overlapping_masks(sparse_run, tmp_path):
    run = open_run(sparse_run)
    export_run(run, tmp_path / "compact.safetensors")
    model, exported = run.load_model().eval(), load_export(tmp_path / "compact.safetensors")
    x = torch.rand(4, 8, 8)
    assert all(torch.equal(model(x, t), exported(x, t)) for t in range(3))


def test_export_refuses_unmasked_runs_and_bad_files(tmp_path):
    hard = open_run(train(tiny_config(scheme={"kind": "hard"}, train={"steps": 5, "device": "cpu"}), tmp_path,
                          quiet=True))
    with pytest.raises(RunError, match="nothing to compact"):
        export_run(hard, tmp_path / "x.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(RunError, match="not a readable export"):
        load_export(tmp_path / "junk.safetensors")


def test_cli_export(mann_run, tmp_path):
    out = tmp_path / "m.safetensors"
    result = subprocess.run([sys.executable, "-m", "lsmn", "export", str(mann_run.path), "--out", str(out)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "of the dense model.safetensors" in result.stdout and out.is_file()


def test_fastest_runner_picks_a_path_that_gives_the_same_outputs(mann_run):
    from lsmn_core.store.export import fastest_runner

    model = mann_run.load_model().eval()
    x = torch.rand(16, 8, 8)
    runner, path = fastest_runner(model, 1, x)
    assert path in ("csr", "dense")
    assert torch.allclose(runner(x), model(x, 1), atol=1e-5)


def test_cli_export_never_replaces_a_file_unasked(mann_run, tmp_path, capsys):
    from lsmn.cli import main

    config = tmp_path / "mine.yaml"
    config.write_text("a user's config\n")
    assert main(["export", str(mann_run.path), "--out", str(config)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--force" in error and config.read_text() == "a user's config\n"
    assert main(["export", str(mann_run.path), "--out", str(config), "--force"]) == 0
    assert load_export(config) is not None
