"""Experiments that produce the README's tables, each a plain loop over configs and seeds.

- signatures: learned mixture weights against the paper's hand-designed signatures (sequential,
  cyclic, random), single task, as in the paper's single-task study.
- transfer: add a task to a trained mixture model; train only its signature and head (random or
  copied from an existing task) against full fine-tuning, with trainable parameter counts.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from lsmn_core.config import TaskConfig, load_config
from lsmn_core.finetune import finetune
from lsmn_core.store import open_run
from lsmn_core.trainer import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def signature_study(seeds=(0, 1, 2), steps: int = 1500, task: str = "digit", device: str = "cpu") -> str:
    """Markdown table: test accuracy of one task under learned and hand-designed signatures."""
    lines = ["| signature | test accuracy (mean ± std) | module order (seed 0) |", "|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("learned", "sequential", "cyclic", "random"):
            accuracies, first_order = [], None
            for seed in seeds:
                config = load_config(CONFIGS / "mixture.yaml", [
                    f"tasks=[{{name: {task}, dataset: digits, target: {task}}}]", f"seed={seed}",
                    f"scheme.signature={kind}", f"train.steps={steps}", f"name={kind}-{seed}"])
                run = open_run(train(config, tmp, device=device, quiet=True))
                accuracies.append(run.summary()["metrics"][task]["test"])
                first_order = first_order or run.summary()["routing"]["signatures"][task]
            lines.append(f"| {kind} | {_mean_std(accuracies)} | {' '.join(map(str, first_order))} |")
    return "\n".join(lines)


def transfer_study(seeds=(0, 1, 2), steps: int = 600, new_task: str = "mod3", device: str = "cpu") -> str:
    """Markdown table: a new digits task learned by signature alone versus full fine-tuning."""
    variants = [("signature + head, random init", "routing", None),
                ("signature + head, init from `digit`", "routing", "digit"),
                ("full fine-tuning", "all", None)]
    results = {name: {"new": [], "old": [], "params": None} for name, _, _ in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            config = load_config(CONFIGS / "mixture.yaml", [f"seed={seed}", f"name=parent-{seed}"])
            parent = open_run(train(config, tmp, device=device, quiet=True))
            before = parent.summary()["metrics"]
            for name, mode, init in variants:
                task = TaskConfig(name=new_task, dataset="digits", target=new_task)
                child = open_run(finetune(parent, steps, mode, [task], init, out_dir=tmp, device=device))
                summary = child.summary()
                results[name]["new"].append(summary["metrics"][new_task]["test"])
                results[name]["old"].append(statistics.mean(
                    summary["metrics"][t]["test"] - before[t]["test"] for t in before))
                results[name]["params"] = summary["finetune"]["trainable_besides_heads"]
    lines = [f"| transfer to `{new_task}` | trainable parameters besides the head | `{new_task}` test accuracy "
             "| change on the old tasks |", "|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['params']:,} | {_mean_std(r['new'])} | {_mean_std(r['old'])} |")
    return "\n".join(lines)


STUDIES = {"signatures": signature_study, "transfer": transfer_study}
