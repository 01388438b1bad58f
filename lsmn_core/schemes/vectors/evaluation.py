"""A merge evaluated on every task beside the individual fine-tunes: each task's metric under the
merge, the individual fine-tune's (the run's own metrics), and their ratio, the normalised accuracy
the merging papers report (FusionBench's "normalized")."""

from __future__ import annotations

import statistics

from lsmn_core.merges.method import Recipe
from lsmn_core.schemes.vectors.scheme import recipe_document
from lsmn_core.store.runs import Run
from lsmn_core.training.evaluation import evaluate_run


def recipe_routing(run: Run, recipe: Recipe) -> dict:
    """The run's routing document with `recipe` in place of its own (its masks unchanged)."""
    return {**run.routing()[0], "recipe": recipe_document(recipe)}


def evaluate_merge(run: Run, recipe: Recipe, device: str = "auto") -> dict:
    """{task: {metric, individual, merged, normalised}} on the test split, and their means."""
    individual = run.summary()["metrics"]
    merged = evaluate_run(run, recipe_routing(run, recipe), device)["metrics"]
    rows = {task: {"metric": m["metric"], "individual": individual[task]["test"], "merged": m["test"],
                   "normalised": m["test"] / individual[task]["test"] if individual[task]["test"] else float("nan")}
            for task, m in merged.items()}
    return {"tasks": rows, "mean": {k: statistics.mean(r[k] for r in rows.values())
                                    for k in ("individual", "merged", "normalised")}}


def table_lines(method: str, result: dict) -> list[str]:
    """The evaluation as a table for people."""
    lines = [f"{'task':<18}{'metric':<10}{'individual':>11}{method:>18}{'normalised':>12}"]
    for task, row in result["tasks"].items():
        lines.append(f"{task:<18}{row['metric']:<10}{row['individual']:>11.4f}{row['merged']:>18.4f}"
                     f"{row['normalised']:>12.3f}")
    mean = result["mean"]
    lines.append(f"{'mean':<18}{'':<10}{mean['individual']:>11.4f}{mean['merged']:>18.4f}{mean['normalised']:>12.3f}")
    return lines
