"""A merge evaluated on every task beside the individual fine-tunes: each task's metric under the
merge, the individual fine-tune's (the run's own metrics), and their ratio, the normalised accuracy
the merging papers report (FusionBench's "normalized")."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import replace

from lsmn_core.merges.method import Recipe
from lsmn_core.schemes.vectors.scheme import recipe_document
from lsmn_core.store.runs import Run
from lsmn_core.training.evaluation import evaluate_each, evaluate_run

LAMBDAS = tuple(round(0.1 * i, 1) for i in range(1, 31))  # the merging papers' grid, 0.1 to 3.0


def recipe_routing(run: Run, recipe: Recipe) -> dict:
    """The run's routing document with `recipe` in place of its own (its masks unchanged)."""
    return {**run.routing()[0], "recipe": recipe_document(recipe)}


def evaluate_merge(run: Run, recipe: Recipe, device: str = "auto") -> dict:
    """{task: {metric, individual, merged, normalised}} on the test split (and dev_normalised, the
    same ratio on dev, by which a choice is made without test data), and their means."""
    individual = run.summary()["metrics"]
    merged = evaluate_run(run, recipe_routing(run, recipe), device)["metrics"]

    def ratio(task: str, split: str) -> float:
        return merged[task][split] / individual[task][split] if individual[task][split] else float("nan")

    rows = {task: {"metric": m["metric"], "individual": individual[task]["test"], "merged": m["test"],
                   "normalised": ratio(task, "test"), "dev_normalised": ratio(task, "dev")}
            for task, m in merged.items()}
    return {"tasks": rows, "mean": {k: statistics.mean(r[k] for r in rows.values())
                                    for k in ("individual", "merged", "normalised", "dev_normalised")}}


SEEDS = 3  # a random merge (DARE) is evaluated at this many seeds, its own first


def seed_spread(run: Run, recipe: Recipe, first: dict, device: str = "auto") -> dict:
    """A random merge at the recipe's seed (evaluated as `first`) and the next SEEDS - 1: each task's
    merged test metric per seed, and the mean and the spread (largest minus smallest) of each task's
    and of the mean's."""
    seeds = [recipe.seed + i for i in range(SEEDS)]
    results = [first, *(evaluate_merge(run, replace(recipe, seed=seed), device) for seed in seeds[1:])]

    def spread(values: list[float]) -> dict:
        return {"per_seed": values, "mean": statistics.mean(values), "spread": max(values) - min(values)}

    return {"seeds": seeds, "tasks": {task: spread([r["tasks"][task]["merged"] for r in results])
                                      for task in results[0]["tasks"]},
            "mean": spread([r["mean"]["merged"] for r in results])}


def lambda_sweep(run: Run, recipe: Recipe, progress: Callable[[int, float, float], None] | None = None,
                 device: str = "auto") -> tuple[float, list[dict]]:
    """Lambda chosen as the merging papers choose it, without test data: the merge at each lambda of
    LAMBDAS, its metric on each task's dev split over the individual fine-tune's (normalised), and the
    lambda of the best mean; with the sweep. `progress(done, lambda, mean)` after each."""
    individual = run.summary()["metrics"]
    edits = [recipe_routing(run, replace(recipe, lam=lam)) for lam in LAMBDAS]
    sweep = []
    for lam, result in zip(LAMBDAS, evaluate_each(run, edits, device, splits=("dev",))):
        ratios = [m["dev"] / individual[t]["dev"] if individual[t]["dev"] else math.nan
                  for t, m in result["metrics"].items()]
        sweep.append({"lambda": lam, "dev_normalised": statistics.mean(ratios)})
        if progress:
            progress(len(sweep), lam, sweep[-1]["dev_normalised"])
    best = max((row for row in sweep if not math.isnan(row["dev_normalised"])), key=lambda row: row["dev_normalised"],
               default=sweep[0])
    return best["lambda"], sweep


def table_lines(method: str, result: dict) -> list[str]:
    """The evaluation as a table for people (with a random merge's spread over seeds, where measured)."""
    seeds = result.get("seed_spread")
    extra = f"{'spread, ' + str(len(seeds['seeds'])) + ' seeds':>18}" if seeds else ""
    lines = [f"{'task':<18}{'metric':<10}{'individual':>11}{method:>18}{'normalised':>12}" + extra]
    for task, row in result["tasks"].items():
        lines.append(f"{task:<18}{row['metric']:<10}{row['individual']:>11.4f}{row['merged']:>18.4f}"
                     f"{row['normalised']:>12.3f}" + (f"{seeds['tasks'][task]['spread']:>18.4f}" if seeds else ""))
    mean = result["mean"]
    lines.append(f"{'mean':<18}{'':<10}{mean['individual']:>11.4f}{mean['merged']:>18.4f}{mean['normalised']:>12.3f}"
                 + (f"{seeds['mean']['spread']:>18.4f}" if seeds else ""))
    return lines
