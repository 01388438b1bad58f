"""What several tests share: the repository's root, a tiny config, random masks, how many
generated cases a family runs."""

import os
import shutil
import tomllib
from pathlib import Path

import torch
from hypothesis import HealthCheck, settings

from lsmn_core.config import parse_config

REPO = Path(__file__).resolve().parents[1]
APP_PATIENCE = 900  # seconds an AppTest script run may take: a guard against a hang, not a speed target


def start_app(monkeypatch, folder):
    """The app (AppTest, no browser) run once on the runs folder `folder`."""
    from streamlit.testing.v1 import AppTest

    import app.state

    monkeypatch.setenv("LSMN_RUNS", str(folder))
    monkeypatch.setattr(app.state, "DEFAULT_RUNS", str(folder))
    return AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=APP_PATIENCE).run()


def open_each_page(at, pages: list[str]) -> None:
    """Open each page ("views/overview.py", ...) of a started app: none may raise or show an error."""
    for page in pages:
        at.switch_page(page).run()
        assert not at.exception and not at.error, (page, at.exception, [e.value for e in at.error])
PROCESS_PATIENCE = 1800  # seconds a child process may take to exit: a guard against a hang, not a speed target

FRESH = int(os.environ.get("LSMN_FRESH_CASES") or 0)


def generated(examples: int) -> settings:
    """Hypothesis settings for a generated family: `examples` fixed cases per suite run (derandomized,
    so CI is reproducible); with LSMN_FRESH_CASES=N, N times as many, drawn afresh (a rerun that
    looks for what the fixed cases miss)."""
    return settings(max_examples=examples * max(FRESH, 1), deadline=None, suppress_health_check=list(HealthCheck),
                    derandomize=not FRESH)


TINY = {
    "name": "tiny",
    "seed": 3,
    "tasks": [
        {"name": "digit", "dataset": "digits", "target": "digit"},
        {"name": "parity", "dataset": "digits", "target": "parity"},
        {"name": "position", "dataset": "position", "target": "cell"},
    ],
    "model": {"width": 32, "depth": 2},
    "scheme": {"kind": "sparse", "prune_rate": 0.5, "min_density": 0.2, "round_steps": 30, "warmup_steps": 20},
    "train": {"steps": 120, "batch_size": 32, "eval_every": 40, "device": "cpu"},
}


def tiny_config(**changes):
    """The tiny config with top-level sections replaced, e.g. tiny_config(scheme={"kind": "hard"})."""
    return parse_config({**TINY, **changes})


def random_masks(model, seed=0, keep=0.4):
    """Give a masked model's tasks random masks, each weight kept with probability `keep`."""
    generator = torch.Generator().manual_seed(seed)
    model.body.load_routing({"masks": {name: torch.rand(mask.shape, generator=generator) < keep
                                       for name, mask in model.body.masks().items()}})


def install(site: Path, name: str, version: str, entry_points: dict, package: Path | None = None) -> None:
    """What pip leaves for a package in `site`: its code, and a .dist-info naming it and its entry points."""
    dist = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{key} = {target}\n" for key, target in entries.items()) + "\n"
        for group, entries in entry_points.items()))
    if package is not None:
        shutil.copytree(package, site / package.name, ignore=shutil.ignore_patterns("__pycache__"))


def project(folder: Path) -> dict:
    """The [project] table of a folder's pyproject.toml (name, version, entry points)."""
    return tomllib.loads((folder / "pyproject.toml").read_text())["project"]


def spec_of(chart) -> str:
    """A drawn chart's plotly JSON, with the line breaks the app puts in long titles read as spaces (as
    written, or escaped as plotly escapes them) and slashes unescaped."""
    return chart.proto.spec.replace("<br>", " ").replace("\\u003cbr\\u003e", " ").replace("\\u002f", "/")
