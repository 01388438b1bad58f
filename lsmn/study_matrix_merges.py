"""`lsmn study matrix_merges`: the merges that work on each weight matrix ("Task Singular Vectors:
Reducing Task Interference in Model Merging"; "No Task Left Behind: Isotropic Model Merging with
Common and Task-Specific Subspaces") beside task arithmetic, TIES and AdaMerging's learned
coefficients, on the per-task fine-tunes of a checkpoint: each task's raw and normalised test
accuracy with lambda picked on dev as `lsmn merge --lambda auto` picks it; TSV-C's accuracy against
the share of the task vectors' numbers it stores; and whether the layers the singular task
interference ranks highest are the ones whose removal from TSV-M (`--exclude`) helps most."""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from lsmn_core.config import load_config
from lsmn_core.merges import MERGES
from lsmn_core.merges.method import Recipe
from lsmn_core.pretrained.models import named
from lsmn_core.schemes.vectors.evaluation import evaluate_merge, lambda_sweep
from lsmn_core.schemes.vectors.importing import from_run
from lsmn_core.schemes.vectors.writer import vectors_body, write_stored
from lsmn_core.store.runs import Run, open_run
from lsmn_core.training.finetune import FinetunePlan, finetune
from lsmn_core.training.trainer import train

METHODS = ("task_arithmetic", "ties", "tsv_m", "iso_c", "iso_cts", "tsv_c")
KEEPS = (0.02, 0.05, 0.1, 0.2, 0.5)  # TSV-C's shares of each weight's numbers, for its curve


def imported_finetunes(config: Path, device: str, tmp: str, finetunes: str | None = None) -> Run:
    """A task vectors run of the config's tasks under a fine-tune per task (its seed), trained in
    `tmp`, or of the run `finetunes` where one is given (a pretrained run of a fine-tune per task)."""
    if finetunes is None:
        run_config = load_config(config, ["scheme={kind: independent}", "name=finetunes"])
        if run_config.data.tokenizer is not None:
            run_config.data.tokenizer = str(named(Path(run_config.data.tokenizer).name))
        finetunes = str(train(run_config, tmp, device=device, quiet=True))
    return open_run(from_run(open_run(finetunes), tmp, quiet=True))


def matrix_merges_study(seeds=(0,), device: str = "cpu", configs: Path = Path("configs"),
                        config: str = "wordnet-minilm.yaml", adamerging_steps: int = 300,
                        finetunes: str | None = None) -> str:
    """Markdown: the table of every method, TSV-C's curve, and the layers excluded one at a time."""
    with tempfile.TemporaryDirectory() as tmp:
        vectors = imported_finetunes(Path(configs) / config, device, tmp, finetunes)
        results, lambdas = {}, {}
        for method in METHODS:
            recipe = Recipe(method, MERGES.get(method).default_lambda)
            lambdas[method], _ = lambda_sweep(vectors, recipe, device=device)
            results[method] = evaluate_merge(vectors, replace(recipe, lam=lambdas[method]), device)
        results["AdaMerging"] = adamerging(vectors, lambdas["task_arithmetic"], adamerging_steps, device, tmp)
        curve = [(keep, stored_share(vectors, Recipe("tsv_c", 1.0, keep=keep), tmp),
                  evaluate_merge(vectors, Recipe("tsv_c", 1.0, keep=keep), device)["mean"]) for keep in KEEPS]
        default_share = stored_share(vectors, Recipe("tsv_c", 1.0), tmp)
        excluded = exclusions(vectors, Recipe("tsv_m", lambdas["tsv_m"]), device)
        return "\n\n".join([method_table(vectors, results, lambdas, default_share), curve_table(curve),
                            exclusion_table(excluded)])


def adamerging(vectors: Run, lam: float, steps: int, device: str, tmp: str) -> dict:
    """AdaMerging's coefficients learned from task arithmetic at `lam`, as evaluate_merge reports a merge."""
    start = {**vectors.routing()[0], "recipe": {"method": "task_arithmetic", "lambda": lam}}
    child = open_run(finetune(vectors, FinetunePlan(steps, "routing", routing=(start, vectors.routing()[1])), tmp,
                              device))
    individual = vectors.summary()["metrics"]
    rows = {task: {"merged": m["test"], "normalised": m["test"] / individual[task]["test"]}
            for task, m in child.summary()["metrics"].items()}
    return {"tasks": rows, "mean": {k: statistics.mean(r[k] for r in rows.values()) for k in ("merged", "normalised")}}


def stored_share(vectors: Run, recipe: Recipe, tmp: str) -> float:
    """The share of the task vectors' numbers TSV-C stores under `recipe` (as lsmn merge writes them)."""
    stored = write_stored(vectors_body(vectors).vectors(), recipe, vectors.task_names, Path(tmp) / "stored.safetensors")
    assert stored is not None
    return stored["share"]


def exclusions(vectors: Run, recipe: Recipe, device: str) -> list[dict]:
    """Each layer's weight matrices taken out of the SVD path (their mean instead), one layer at a time:
    the layer's summed singular task interference and the merge's mean normalised dev and test metric."""
    body = vectors_body(vectors)
    singular = vectors.summary()["vectors"].get("singular_per_tensor", {})
    layers = sorted({body.target_layers[name] for name in singular})
    base = evaluate_merge(vectors, recipe, device)
    rows = []
    for layer in layers:
        names = [name for name in singular if body.target_layers[name] == layer]
        result = evaluate_merge(vectors, replace(recipe, exclude=names), device)
        rows.append({"layer": layer, "interference": sum(singular[name] for name in names),
                     "dev": result["mean"]["dev_normalised"] - base["mean"]["dev_normalised"],
                     "test": result["mean"]["normalised"] - base["mean"]["normalised"]})
    return rows


def method_table(vectors: Run, results: dict, lambdas: dict, share: float) -> str:
    names = list(results)
    individual = vectors.summary()["metrics"]
    lines = ["| task | individual | " + " | ".join(names) + " |", "|---" * (2 + len(names)) + "|"]
    for task in vectors.task_names:
        lines.append(f"| {task} | {individual[task]['test']:.3f} | " + " | ".join(
            f"{results[n]['tasks'][task]['merged']:.3f} ({results[n]['tasks'][task]['normalised']:.3f})"
            for n in names) + " |")
    lines.append(f"| mean | {statistics.mean(individual[t]['test'] for t in vectors.task_names):.3f} | " + " | ".join(
        f"{results[n]['mean']['merged']:.3f} ({results[n]['mean']['normalised']:.3f})" for n in names) + " |")
    picked = ", ".join(f"{m} {lam}" for m, lam in lambdas.items())
    return "\n".join(lines) + (f"\n\nRaw test accuracy (normalised by the individual fine-tune's). Lambda picked on "
                               f"dev (0.1 to 3.0): {picked}. TSV-C at floor(r / T) triplets stores {share:.1%} of the "
                               "task vectors' numbers.")


def curve_table(curve: list) -> str:
    lines = ["| TSV-C keep | stored share | mean accuracy | mean normalised |", "|---|---|---|---|"]
    lines += [f"| {keep} | {share:.1%} | {mean['merged']:.3f} | {mean['normalised']:.3f} |"
              for keep, share, mean in curve]
    return "\n".join(lines)


def exclusion_table(rows: list[dict]) -> str:
    if not rows:
        return "No weight matrix takes the SVD path (convolutions and embeddings take the mean): nothing to exclude."
    lines = ["| layer excluded from TSV-M | singular interference | mean normalised dev change | test change |",
             "|---|---|---|---|"]
    lines += [f"| {r['layer']} | {r['interference']:.3f} | {r['dev']:+.4f} | {r['test']:+.4f} |"
              for r in sorted(rows, key=lambda r: -r["interference"])]
    rho = spearmanr([r["interference"] for r in rows], [r["dev"] for r in rows]).statistic if len(rows) > 2 else np.nan
    return "\n".join(lines) + f"\n\nSpearman correlation of interference and the dev gain of excluding: {rho:.2f}."
