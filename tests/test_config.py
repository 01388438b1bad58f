import subprocess
import sys

import pytest

from helpers import REPO, TINY
from lsmn_core.config import apply_overrides, load_config, parse_config
from lsmn_core.errors import ConfigError


def test_valid_config_fills_defaults():
    config = parse_config(TINY)
    assert config.scheme.kind == "sparse" and config.scheme.prune_rate == 0.5
    assert config.train.sampling == "proportional" and config.data.split_seed == 0


@pytest.mark.parametrize("change, message", [
    ({"model": {"width": 32, "depht": 2}}, "model: unknown key 'depht'"),
    ({"train": {"steps": "many"}}, "train.steps: expected an integer"),
    ({"train": {"lr": -1.0}}, "train.lr: must be > 0"),
    ({"scheme": {"kind": "sparse", "prune_rate": 1.5}}, "scheme.prune_rate: must be between 0 and 1"),
    ({"scheme": {"kind": "magic"}}, "unknown scheme 'magic'"),
    ({"train": {"sampling": "random"}}, "train.sampling: must be one of proportional, round_robin"),
    ({"tasks": []}, "at least one task"),
    ({"tasks": [{"name": "a", "dataset": "digits", "target": "digit"}] * 2}, "appears twice"),
    ({"tasks": [{"name": "a"}]}, "give exactly one of 'dataset', 'file' or 'source'"),
    ({"colour": "red"}, "unknown key 'colour'"),
])
def test_bad_config_names_the_problem(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({**TINY, **change})


def test_overrides_reach_nested_keys_and_parse_yaml_values():
    data = apply_overrides({"train": {"steps": 5}}, ["train.steps=200", "scheme={kind: hard}"])
    assert data == {"train": {"steps": 200}, "scheme": {"kind": "hard"}}
    config = load_config(REPO / "configs" / "quickstart.yaml", ["train.steps=7", "scheme.prune_rate=0.5"])
    assert config.train.steps == 7 and config.scheme.prune_rate == 0.5


@pytest.mark.parametrize("content, overrides, message", [
    ("name: x\ntasks: [{name: a, dataset: digits, target: digit}]\nbogus: 1\n", [], "unknown key 'bogus'"),
    ("name: x\ntasks: [{name: a, dataset: digits, target: digit}]\nmodel: {width: wide}\n", [],
     "model.width: expected an integer"),
    ("name: x\ntasks: [{name: a, dataset: digits, target: digit}]\n", ["train.stepz=3"], "unknown key 'stepz'"),
    ("name: x\ntasks: [{name: a, file: nowhere.npz}]\n", [], "data file not found"),
    ("name: [unclosed\n", [], "not valid YAML"),
    ("name: x\ntasks: true\n", [], "tasks: expected a list, got True"),  # found by a fresh fuzz seed
    ("name: x\ntasks: 5\n", [], "tasks: expected a list, got 5"),
])
def test_cli_bad_config_prints_one_line_and_exits_2(tmp_path, content, overrides, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    sets = [a for o in overrides for a in ("--set", o)]
    result = subprocess.run([sys.executable, "-m", "lsmn", "train", str(path), "--out", str(tmp_path / "runs"),
                             *sets], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lsmn: error:") and message in lines[0], result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_cli_missing_config_file(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lsmn", "train", str(tmp_path / "none.yaml")],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and "config file not found" in result.stderr


def test_the_documented_config_example_is_valid():
    text = (REPO / "docs" / "CONFIGS.md").read_text()
    block = text.split("# Configs", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    import yaml

    config = parse_config(yaml.safe_load(block))
    assert [t.name for t in config.tasks][:2] == ["digit", "blurred_parity"]
    assert config.scheme.round_steps == 100 and config.train.sampling == "proportional"
