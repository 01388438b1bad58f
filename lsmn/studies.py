"""Experiments that produce the tables of docs/, each a plain loop over configs and seeds.

- signatures: learned mixture weights against the paper's hand-designed signatures (sequential,
  cyclic, random), single task, as in the paper's single-task study.
- transfer: add a task to a trained mixture model; train only its signature and head (random or
  copied from an existing task) against full fine-tuning, with trainable parameter counts.
- forgetting: add a task to MANN (weights no old task owns) against fine-tuning hard sharing.
- pruning: MANN with 90% of the body removed against the dense model, on Fashion-MNIST + digits.
- muir: the MUiR poster's synthetic table: single-task learning (trained, and in closed form),
  random, oracle and optimised alignments, test RMSE over seeds, and how well the optimised
  alignment recovers the true groups.
- blocks: every block (mlp, conv, attention, a user's module) under every scheme on digits and
  Fashion-MNIST tasks: test accuracy, parameters and training time.
- domains: template mixtures on digits x input domains, with the mlp and the conv block: do tasks
  of one domain share early layers and tasks of one target late ones?
- code_tokens: per-token tasks on the standard library's source under independent, hard, soft,
  hierarchical and sparse sharing (the body, or the token embedding too), with the lstm and attention
  blocks: does sparse sharing spare the unrelated task?
- sharing: the digits tasks under single-task learning, hard, soft, hierarchical and sparse sharing
  (the body, or the image encoder too), the sparse-sharing slides' comparison (does sharing cost the
  unrelated task?).
- adapt: a mixture model of digit tasks under three input domains adapted to a fourth, unlabelled,
  by its mixture weights alone or by its input adapter (the compositional paper's Table 3).
- moe: the digits tasks under a mixture of experts whose gate sees the sample, the sample and a
  task offset, or the task alone: accuracy per task and expert specialisation per layer.
- pretrained: a checkpoint's tasks under a fine-tune per task, hard sharing, sparse sharing and
  learned masks, beside the Studio's own network from scratch, with what each stores per task.
- merges: the per-task fine-tunes of a checkpoint imported as task vectors and merged by every
  method (lambda picked on dev), beside AdaMerging's learned coefficients: normalised accuracy.
- matrix_merges: the same fine-tunes under the merges of each weight matrix (TSV-M, Iso-C, Iso-CTS)
  and TSV-C's compression, its accuracy against what it stores, and layers excluded one at a time
  (study_matrix_merges.py).
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Literal
from pathlib import Path

import numpy as np
from safetensors import safe_open

from analysis.sharing_graph import adjusted_rand_index, cluster_labels
from lsmn_core.schemes.mixture.signatures import pair_sharing
from lsmn_core.training.adapt import AdaptPlan, adapt
from lsmn_core.config import TaskConfig, load_config
from lsmn_core.errors import ConfigError
from lsmn_core.data.loading import TaskData, load_tasks
from lsmn_core.datasets import kang
from lsmn_core.pretrained.models import named
from lsmn_core.training.finetune import FinetunePlan, finetune
from lsmn_core.schemes.moe.gates import specialisation
from lsmn.study_matrix_merges import imported_finetunes, matrix_merges_study
from lsmn_core.store.runs import open_run
from lsmn_core.training.evaluation import evaluate_run
from lsmn_core.training.trainer import train

CONFIGS = Path("configs")  # the studies' configs, as found from the checkout's root; `lsmn study --configs`


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def signature_study(seeds=(0, 1, 2), steps: int = 1500, task: str = "digit", device: str = "cpu",
                    configs: Path = CONFIGS) -> str:
    """Markdown table: test accuracy of one task under learned and hand-designed signatures."""
    lines = ["| signature | test accuracy (mean ± std) | module order (seed 0) |", "|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("learned", "sequential", "cyclic", "random"):
            accuracies: list[float] = []
            first_order: list[int] = []
            for seed in seeds:
                config = load_config(Path(configs) / "mixture.yaml", [
                    f"tasks=[{{name: {task}, dataset: digits, target: {task}}}]", f"seed={seed}",
                    f"scheme.signature={kind}", f"train.steps={steps}", f"name={kind}-{seed}"])
                run = open_run(train(config, tmp, device=device, quiet=True))
                accuracies.append(run.summary()["metrics"][task]["test"])
                first_order = first_order or run.summary()["routing"]["signatures"][task]
            lines.append(f"| {kind} | {_mean_std(accuracies)} | {' '.join(map(str, first_order))} |")
    return "\n".join(lines)


def transfer_study(seeds=(0, 1, 2), steps: int = 600, new_task: str = "mod3", device: str = "cpu",
                   configs: Path = CONFIGS) -> str:
    """Markdown table: a new digits task learned by signature alone versus full fine-tuning."""
    variants: list[tuple[str, Literal["routing", "all"], str | None]] = [
        ("signature + head, random init", "routing", None), ("signature + head, init from `digit`", "routing", "digit"),
        ("full fine-tuning", "all", None)]
    results: dict[str, dict] = {name: {"new": [], "old": [], "params": None} for name, _, _ in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            config = load_config(Path(configs) / "mixture.yaml", [f"seed={seed}", f"name=parent-{seed}"])
            parent = open_run(train(config, tmp, device=device, quiet=True))
            before = parent.summary()["metrics"]
            for name, mode, init in variants:
                task = TaskConfig(name=new_task, dataset="digits", target=new_task)
                child = open_run(finetune(parent, FinetunePlan(steps, mode, [task], init), tmp, device))
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


def forgetting_study(seeds=(0, 1, 2), steps: int = 600, new_task: str = "mod3", device: str = "cpu",
                     configs: Path = CONFIGS) -> str:
    """Markdown table: adding a task to MANN (new weights only) against fine-tuning a hard-shared model."""
    variants: list[tuple[str, str, Literal["new", "all"]]] = [
        ("mann, new task on weights no old task owns", "scheme={kind: mann, keep: 0.15, round_steps: 200}", "new"),
        ("hard sharing, fine-tuned on the new task", "scheme={kind: hard}", "all")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, scheme, mode in variants:
            new_scores, changes, worst = [], [], []
            for seed in seeds:
                overrides = [f"seed={seed}", f"name={mode}-{seed}", scheme]
                parent = open_run(train(load_config(Path(configs) / "digits.yaml", overrides), tmp, device=device,
                                        quiet=True))
                before = parent.summary()["metrics"]
                task = TaskConfig(name=new_task, dataset="digits", target=new_task)
                after = open_run(finetune(parent, FinetunePlan(steps, mode, [task]), tmp, device)).summary()
                deltas = [after["metrics"][t]["test"] - before[t]["test"] for t in before]
                new_scores.append(after["metrics"][new_task]["test"])
                changes.append(statistics.mean(deltas))
                worst.append(min(deltas))
            rows.append(f"| {label} | {_mean_std(new_scores)} | {_mean_std(changes)} | {_mean_std(worst)} |")
    header = [f"| adding `{new_task}` | `{new_task}` test accuracy | mean change on the old tasks | "
              "worst old task's change |", "|---|---|---|---|"]
    return "\n".join(header + rows)


def pruning_study(seeds=(0, 1, 2), device: str = "cpu", configs: Path = CONFIGS) -> str:
    """Markdown table: MANN with 90% of the body removed against the dense model, per task."""
    results: dict[str, dict[str, list[float]]] = {}
    body_kept = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for label, overrides in (("dense", ["scheme={kind: hard}"]), ("mann", [])):
            for seed in seeds:
                config = load_config(Path(configs) / "mann.yaml", [f"seed={seed}", f"name={label}-{seed}", *overrides])
                run = open_run(train(config, tmp, device=device, quiet=True))
                for task, m in run.summary()["metrics"].items():
                    results.setdefault(task, {}).setdefault(label, []).append(m["test"])
                if label == "mann":
                    body_kept = sum(run.summary()["density"].values())
    lines = [f"| task | dense test accuracy | MANN test accuracy ({1 - body_kept:.0%} of the body removed) "
             "| change |", "|---|---|---|---|"]
    for task, r in results.items():
        change = [m - d for m, d in zip(r["mann"], r["dense"])]
        lines.append(f"| {task} | {_mean_std(r['dense'])} | {_mean_std(r['mann'])} | {_mean_std(change)} |")
    return "\n".join(lines)


MUIR_VARIANTS = {  # fixed alignments train as long as the search and the final phase together
    "single-task learning": ["scheme.alignment=distinct", "scheme.hypermodules=null", "scheme.generations=0"],
    "MUiR + random alignment": ["scheme.alignment=random", "scheme.generations=0"],
    "MUiR + oracle alignment": ["scheme.alignment=groups", "scheme.generations=0"],
    "MUiR + optimisation": [],
}


def muir_study(seeds=(0, 1, 2), device: str = "cpu", config: str | Path | None = None,
               domains: tuple[str, ...] = ("clean", "noisy"), configs: Path = CONFIGS,
               overrides: tuple[str, ...] = ()) -> str:
    """Markdown table of test metrics (mean ± std over seeds) per alignment.

    With `domains` (kang_synthetic: clean, noisy) every task's domain is set to each in turn and a
    column holds the mean test RMSE over tasks; without, each task gets its own column (the
    cross-modal comparison, a user data set), plus their mean when every task is a regression. The
    oracle row and the adjusted Rand index between the optimised task clusters and the true groups
    need scheme.groups. Each seed draws data and model afresh. `overrides` (key=value) change the
    task set's config for every run."""
    config = config or Path(configs) / "kang.yaml"
    base = load_config(config, list(overrides))
    budget = base.train.steps + base.scheme.generations * base.scheme.generation_steps
    variants = {v: o for v, o in MUIR_VARIANTS.items() if base.scheme.groups or "groups" not in " ".join(o)}
    rows = [*variants][:1] + [LEAST_SQUARES] + [*variants][1:] + [UNDETERMINED]  # closed forms beside the trained rows
    results: dict[str, dict[str, list[float]]] = {v: {} for v in rows}
    ari: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for domain in domains or [None]:
            for variant, fixed in variants.items():
                for seed in seeds:
                    steps = [f"train.steps={budget}"] if fixed else []
                    run_config = seed_config(config, [*overrides, *fixed, *steps], seed, domain)
                    run = open_run(train(run_config, tmp, device=device, quiet=True))
                    metrics = run.summary()["metrics"]
                    mean_rmse = statistics.mean(m["test"] for m in metrics.values())
                    all_rmse = all(m["metric"] == "rmse" for m in metrics.values())
                    values = {f"{domain} test RMSE": mean_rmse} if domain else {
                        **{f"{t} test": m["test"] for t, m in metrics.items()},
                        **({"mean test RMSE": mean_rmse} if all_rmse else {})}
                    for column, value in values.items():
                        results[variant].setdefault(column, []).append(value)
                    if not fixed and base.scheme.groups:
                        labels = cluster_labels(run.routing()[0]["alignment"])
                        column = f"{domain} test RMSE" if domain else list(values)[-1]
                        ari.setdefault(column, []).append(adjusted_rand_index(labels, base.scheme.groups))
            drawn = [load_tasks(c.tasks, c.data)
                     for c in (seed_config(config, list(overrides), seed, domain) for seed in seeds)]
            if all(linear_regressions(data) for data in drawn):
                column = f"{domain} test RMSE" if domain else "mean test RMSE"
                results[LEAST_SQUARES][column] = [float(least_squares_rmse(data) or 0) for data in drawn]
                if base.scheme.groups:
                    results[UNDETERMINED][column] = [float(undetermined_rmse(data, base.scheme.groups) or 0)
                                                     for data in drawn]
    columns = list(next(iter(results.values())))
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {v} | " + " | ".join(_mean_std(r[c]) if c in r else "" for c in columns) + " |"
              for v, r in results.items() if r]
    if base.scheme.groups:
        lines.append("| adjusted Rand index, optimised clusters vs true groups | "
                     + " | ".join(_mean_std(ari[c]) if c in ari else "" for c in columns) + " |")
    if domains and [(t.dataset, t.target) for t in base.tasks] == [("kang_synthetic", str(i)) for i in range(30)]:
        lines.append("| adjusted Rand index, each task on the group whose true direction fits its samples best | "
                     + " | ".join(_mean_std([_kang_separable(seed, domain) for seed in seeds]) for domain in domains)
                     + " |")
    return "\n".join(lines)


LEAST_SQUARES = "single-task least squares (closed form)"


def seed_config(config, overrides: list[str], seed: int, domain: str | None):
    """The study's config for one seed (which draws the data and the model) and domain."""
    run_config = load_config(config, [*overrides, f"seed={seed}", f"data.split_seed={seed}", f"name=muir-{seed}"])
    for task in run_config.tasks:
        task.domain = domain or task.domain
    return run_config


def least_squares_rmse(data: list[TaskData]) -> float | None:
    """Single-task learning in closed form: each task's weights are the minimum-norm least-squares fit
    to its training split, without an intercept (Kang et al.'s tasks are y = x . w); the mean test
    RMSE over the tasks, or None unless every task is a regression on vectors held in memory.

    With fewer samples than weights (Kang's 10 for 20) every fit that passes through the samples is
    one of many; this one is the smallest, which a network trained from a random start does not reach
    (it keeps whatever part of its start the samples cannot see)."""
    if not linear_regressions(data):
        return None
    errors = []
    for task in data:
        (x, y), (x_test, y_test) = (split_rows(task, split) for split in ("train", "test"))
        w = np.linalg.lstsq(x, y, rcond=None)[0]
        errors.append(float(np.sqrt(np.mean((x_test @ w - y_test) ** 2))))
    return statistics.mean(errors)


def linear_regressions(data: list[TaskData]) -> bool:
    """Whether every task is a regression on vectors held in memory, which closed forms can fit."""
    return all(d.spec.kind == "regression" and d.spec.modality == "vector" and not d.streamed for d in data)


def split_rows(task: TaskData, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A regression task's split as float64 inputs [N, features] and targets [N], for the closed forms."""
    x, y = task.rows(split, task.spec.sizes[split])
    return x.reshape(len(x), -1).astype(np.float64), y.astype(np.float64).reshape(len(y), -1)


UNDETERMINED = "floor: what each true group's training samples leave undetermined"


def undetermined_rmse(data: list[TaskData], groups: list[int]) -> float | None:
    """The mean test RMSE that no fit to the training splits can remove, when the tasks of a true group
    share one direction (each task its own scale): the part of each task's weights (least squares on
    all of its samples, its truth for clean data) outside the span of its group's stacked training
    inputs. A group whose tasks hold fewer training samples than the block's inputs leaves some of its
    direction unseen, and the search's RMSE cannot fall below this however right its alignment; None
    unless every task is a regression on vectors held in memory."""
    if not linear_regressions(data):
        return None
    errors = []
    for task, group in zip(data, groups):
        x, y = map(np.concatenate, zip(*(split_rows(task, split) for split in ("train", "dev", "test"))))
        truth = np.linalg.lstsq(x, y, rcond=None)[0]
        seen = np.concatenate([split_rows(other, "train")[0] for other, g in zip(data, groups) if g == group])
        _, values, rows = np.linalg.svd(seen, full_matrices=True)
        unseen = rows[int((values > 1e-8 * values[0]).sum()):]  # the null space of the group's inputs
        x_test = split_rows(task, "test")[0]
        errors.append(float(np.sqrt(np.mean((x_test @ (unseen.T @ (unseen @ truth))) ** 2))))
    return statistics.mean(errors)


def _kang_separable(seed: int, domain: str) -> float:
    """What a Kang task's own 15 training samples say about its group: each task goes to the group
    whose true direction, scaled by least squares, fits them best. A task whose scale is near 0 is lost
    in the noisy targets' noise, and no alignment learned from these samples can place it reliably."""
    directions = kang.weights(seed)[1]
    labels = []
    for index in range(len(directions) * 10):
        splits = kang.task_splits(index, domain == "noisy", seed)
        x = np.concatenate([splits["train"][0], splits["dev"][0]]).astype(np.float64)
        y = np.concatenate([splits["train"][1], splits["dev"][1]]).astype(np.float64)
        features = x @ directions.T  # [15, groups]: each group's direction as one feature
        scale = (features * y[:, None]).sum(0) / (features**2).sum(0)
        labels.append(int(np.argmin(((y[:, None] - features * scale) ** 2).sum(0))))
    return adjusted_rand_index(labels, [index // 10 for index in range(len(labels))])


BLOCKS = {"mlp": "mlp", "conv": "conv", "attention": "attention",
          "user (`gated_block:GatedBlock`)": {"class": "gated_block:GatedBlock", "args": {"expansion": 2}}}
BLOCK_SCHEMES: dict[str, dict] = {  # each scheme's search kept short, so that the table fits in one sitting
    "independent": {}, "hard": {},
    "sparse": {"prune_rate": 0.3, "min_density": 0.3, "round_steps": 150, "warmup_steps": 100},
    "mann": {"keep": 0.3, "rounds": 1, "round_steps": 200},
    "mixture": {"templates": 3},
    "moe": {"experts": 4, "top_k": 2},
    "hyper": {"network": "body", "block": [16, 16], "generations": 3, "generation_steps": 50},
}


def blocks_study(seeds=(0,), device: str = "cpu", configs: Path = CONFIGS) -> str:
    """Markdown table: every block under every scheme on configs/blocks.yaml (the user block needs
    examples/ on PYTHONPATH): mean test accuracy over the tasks, total and mean active parameters, and
    the wall time of a whole run (search included)."""
    lines = ["| block | scheme | mean test accuracy | parameters (total) | active per task (mean) | time (s) |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for label, block in BLOCKS.items():
            for kind, options in BLOCK_SCHEMES.items():
                accuracy, seconds = [], []
                for seed in seeds:
                    config = load_config(Path(configs) / "blocks.yaml", [  # JSON values are YAML
                        f"seed={seed}", f"name={kind}-{seed}", f"model.block={json.dumps(block)}",
                        f"scheme={json.dumps({'kind': kind, **options})}"])
                    start = time.perf_counter()
                    run = open_run(train(config, tmp, device=device, quiet=True))
                    seconds.append(time.perf_counter() - start)
                    summary = run.summary()
                    accuracy.append(statistics.mean(m["test"] for m in summary["metrics"].values()))
                params = summary["params"]
                active = statistics.mean(params["active"].values())
                lines.append(f"| {label} | {kind} | {_mean_std(accuracy)} | {params['total']:,} | {active:,.0f} | "
                             f"{statistics.mean(seconds):.0f} |")
    return "\n".join(lines)


def domains_study(seeds=(0, 1), device: str = "cpu", configs: Path = CONFIGS, blocks=("mlp", "conv")) -> str:
    """Markdown table: on configs/domains.yaml (conv: 2 x 2 patches, 4 x 4 maps), per block, seed and
    band of layers, the share of same-domain and of same-target task pairs that pick one template."""
    base = load_config(Path(configs) / "domains.yaml")
    depth, K = base.model.depth, base.scheme.templates
    bands = [range(0, depth // 3), range(depth // 3, depth - depth // 3), range(depth - depth // 3, depth)]
    names = [f"layers {b.start}-{b.stop - 1}" for b in bands]
    lines = ["| block | seed | mean test accuracy | " + " | ".join(f"{n}: same domain / same target" for n in names)
             + " |", "|---" * (3 + len(bands)) + "|"]
    with tempfile.TemporaryDirectory() as tmp:
        for block in blocks:
            for seed in seeds:
                config = load_config(Path(configs) / "domains.yaml", [
                    f"seed={seed}", f"name=domains-{block}-{seed}", f"model.block={block}", "model.patch=2"])
                run = open_run(train(config, tmp, device=device, quiet=True))
                signatures = run.routing()[0]["signatures"]
                domain = {t.name: t.domain for t in config.tasks}
                target = {t.name: str(t.target) for t in config.tasks}
                cells = [f"{pair_sharing(signatures, domain, b):.2f} / {pair_sharing(signatures, target, b):.2f}"
                         for b in bands]
                accuracy = statistics.mean(m["test"] for m in run.summary()["metrics"].values())
                lines.append(f"| {block} | {seed} | {accuracy:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nChance: about 1/{K} = {1 / K:.2f}."


CODE_SCHEMES = {"independent": ["scheme={kind: independent}"], "hard": ["scheme={kind: hard}"],
                "soft": ["scheme={kind: soft}"],
                # the unrelated task read out after the first of the two blocks
                "hierarchical": ["scheme={kind: hierarchical, depths: {length_parity: 1}}"], "sparse": [],
                "sparse, embedding too": ["scheme.prune_encoders=true"]}


def code_tokens_study(seeds=(0, 1, 2), device: str = "cpu", configs: Path = CONFIGS,
                      blocks=("lstm", "attention")) -> str:
    """Markdown table: per-token test accuracy of each task and mean active parameters per task,
    for each block and scheme on configs/code-tokens.yaml."""
    tasks = [t.name for t in load_config(Path(configs) / "code-tokens.yaml").tasks]
    lines = ["| block | scheme | " + " | ".join(tasks) + " | active parameters per task |",
             "|---" * (len(tasks) + 3) + "|"]
    with tempfile.TemporaryDirectory() as tmp:
        for block in blocks:
            for scheme, overrides in CODE_SCHEMES.items():
                accuracy: dict[str, list[float]] = {t: [] for t in tasks}
                for seed in seeds:
                    config = load_config(Path(configs) / "code-tokens.yaml", [
                        f"seed={seed}", f"name=code-{block}-{scheme}-{seed}", f"model.block={block}", *overrides])
                    summary = open_run(train(config, tmp, device=device, quiet=True)).summary()
                    for t in tasks:
                        accuracy[t].append(summary["metrics"][t]["test"])
                active = statistics.mean(summary["params"]["active"].values())
                lines.append(f"| {block} | {scheme} | " + " | ".join(_mean_std(accuracy[t]) for t in tasks)
                             + f" | {active:,.0f} |")
    return "\n".join(lines)


MOE_GATES = {"sample": "gate_input: sample, task_gate: false", "sample + task offset": "gate_input: sample",
             "task": "gate_input: task"}


def moe_study(seeds=(0, 1, 2), device: str = "cpu", configs: Path = CONFIGS) -> str:
    """Markdown table: per gate input, each digits task's test accuracy and each layer's expert
    specialisation (normalised mutual information between task and expert), 4 experts, top 2."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, gate in MOE_GATES.items():
            accuracy: dict[str, list[float]] = {}
            per_layer: list[list[float]] = []
            for seed in seeds:
                config = load_config(Path(configs) / "digits.yaml", [
                    f"scheme={{kind: moe, experts: 4, top_k: 2, {gate}}}", f"seed={seed}", f"name=moe-{seed}"])
                summary = open_run(train(config, tmp, device=device, quiet=True)).summary()
                for task, m in summary["metrics"].items():
                    accuracy.setdefault(task, []).append(m["test"])
                per_layer.append(specialisation(summary["routing"]["gate_stats"]))
            layers = [_mean_std(list(values)) for values in zip(*per_layer)]
            rows.append((label, [_mean_std(v) for v in accuracy.values()], layers, list(accuracy)))
    tasks, depth = rows[0][3], len(rows[0][2])
    lines = ["| gate sees | " + " | ".join(f"`{t}` test accuracy" for t in tasks) + " | "
             + " | ".join(f"specialisation, layer {layer}" for layer in range(depth)) + " |",
             "|---" * (1 + len(tasks) + depth) + "|"]
    lines += [f"| {label} | " + " | ".join(scores + layers) + " |" for label, scores, layers, _ in rows]
    return "\n".join(lines)


SHARING_SCHEMES = {  # the sparse-sharing slides' table: single-task, the three baselines, sparse sharing
    "single-task": ["scheme={kind: independent}"], "hard": ["scheme={kind: hard}"], "soft": ["scheme={kind: soft}"],
    # the unrelated task read out halfway up, below the related tasks (Søgaard and Goldberg's low-level task)
    "hierarchical": ["scheme={kind: hierarchical, depths: {position: 2}}"], "sparse": [],
    "sparse, encoder too": ["scheme.prune_encoders=true"]}


def sharing_study(seeds=(0, 1, 2), device: str = "cpu", configs: Path = CONFIGS) -> str:
    """Markdown table: each digits task's test accuracy under single-task learning, hard, soft,
    hierarchical and sparse sharing (the body pruned, or the encoders too), with the parameters each
    task uses (mean over seeds: the masks IMP finds differ) and each scheme's total."""
    results: dict[str, dict[str, list[float]]] = {}
    active: dict[str, dict[str, list[int]]] = {}
    totals: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, overrides in SHARING_SCHEMES.items():
            for seed in seeds:
                config = load_config(Path(configs) / "digits.yaml",
                                     [f"seed={seed}", f"name={label}-{seed}", *overrides])
                summary = open_run(train(config, tmp, device=device, quiet=True)).summary()
                for task, m in summary["metrics"].items():
                    results.setdefault(task, {}).setdefault(label, []).append(m["test"])
                    active.setdefault(task, {}).setdefault(label, []).append(summary["params"]["active"][task])
                totals[label] = summary["params"]["total"]
    lines = ["| task | " + " | ".join(SHARING_SCHEMES) + " |", "|---" * (1 + len(SHARING_SCHEMES)) + "|"]
    for task, by_scheme in results.items():
        lines.append(f"| {task} | " + " | ".join(
            f"{_mean_std(by_scheme[label])} ({statistics.mean(active[task][label]) / 1000:.1f}k)"
            for label in SHARING_SCHEMES) + " |")
    lines.append("| total parameters | " + " | ".join(f"{totals[label] / 1000:.1f}k" for label in SHARING_SCHEMES)
                 + " |")
    return "\n".join(lines)


REVERSED = "(tasks in reverse order)"  # a variant's marker: its tasks in the opposite order to the config's
PRETRAINED_VARIANTS = {  # the methods on a checkpoint, over the config's own targets
    "per-task fine-tune": ["scheme={kind: independent}"],
    "hard sharing": ["scheme={kind: hard}"],
    "sparse sharing (IMP)": [],
    "learned masks (Piggyback)": ["scheme={kind: sparse, masks: learned, mask_steps: 300}"],
    "per-task LoRA (rank 8)": ["scheme={kind: independent, adapter: {lora: {rank: 8, alpha: 16}}}"],
    "PackNet": ["scheme={kind: mann, keep: 0.2, round_steps: 150}", "train.steps=0"],
    "PackNet, reversed order": ["scheme={kind: mann, keep: 0.2, round_steps: 150}", "train.steps=0", REVERSED],
    "Polytropon (K 4, rank 2)": ["scheme={kind: mixture, templates: 4, adapter: {lora: {rank: 2, alpha: 4}}}"],
    "upcycled experts (E 4, top 2)": ["scheme={kind: moe, experts: 4, top_k: 2}", "model.targets=null"],
}
FROM_SCRATCH = {  # a network of the Studio's own of the checkpoint's width, on the same inputs
    "wordnet-minilm.yaml": ["model.pretrained=null", "model.block=attention", "model.width=384", "model.depth=2",
                            "model.heads=6", "scheme={kind: hard}", "data.tokenizer=all-MiniLM-L6-v2"],
    "digits-fashion-conv.yaml": ["model.pretrained=null", "model.block=conv", "model.width=32", "model.depth=3",
                                 "scheme={kind: hard}"],
}


BITS = {"F32": 32, "F16": 16, "BF16": 16, "F64": 64, "BOOL": 8, "U8": 8, "I64": 64}  # safetensors dtypes


def bits_per_target_weight(run) -> float:
    """What a pretrained run keeps per task of its checkpoint's target weights, in bits per target
    weight: its masks (one bit per weight per task) and its float tensors other than the heads
    (deltas), over the tasks and the targets' elements. The heads are counted in the stored MB."""
    targets = sum(math.prod(shape) for shape in run.meta["pretrained"]["targets"].values())
    mask_bits = sum(mask.size for mask in run.masks().values())
    with safe_open(str(run.path / "model.safetensors"), "pt") as stored:
        slices = [stored.get_slice(key) for key in stored.keys() if not key.startswith("heads.")]
        tensor_bits = sum(math.prod(s.get_shape()) * BITS[s.get_dtype()] for s in slices)
    return (mask_bits + tensor_bits) / len(run.task_names) / targets


def pretrained_study(seeds=(0, 1, 2), device: str = "cpu", configs: Path = CONFIGS,
                     config: str = "wordnet-minilm.yaml") -> str:
    """Markdown table: each task's test accuracy on a checkpoint under a fine-tune per task, hard
    sharing, sparse sharing and learned masks, and of the Studio's own network from scratch; with
    what each run stores per task (its files' bytes over the tasks, and bits per target weight)."""
    variants = {**PRETRAINED_VARIANTS, "from scratch": FROM_SCRATCH[config]}
    results: dict[str, dict[str, list[float]]] = {}
    stored: dict[str, list[float]] = {}
    refused: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, overrides in variants.items():
            for seed in seeds:
                run_config = load_config(Path(configs) / config, [f"seed={seed}", f"data.split_seed={seed}",
                                                                  f"name=pretrained-{seed}",
                                                                  *(o for o in overrides if o != REVERSED)])
                if REVERSED in overrides:
                    run_config.tasks.reverse()
                if run_config.data.tokenizer is not None:  # a checkpoint's tokenizer, by its name in the models folder
                    run_config.data.tokenizer = str(named(Path(run_config.data.tokenizer).name))
                try:
                    run = open_run(train(run_config, tmp, device=device, quiet=True))
                except ConfigError as exc:  # a method this checkpoint cannot take (upcycling needs linear layers)
                    refused[label] = str(exc)
                    break
                for task, m in run.summary()["metrics"].items():
                    results.setdefault(task, {}).setdefault(label, []).append(m["test"])
                size = sum((run.path / f).stat().st_size for f in ("model.safetensors", "routing.safetensors")
                           if (run.path / f).is_file())
                stored.setdefault(label, []).append(size / len(run.task_names))
                if "pretrained" in run.meta:
                    stored.setdefault(f"{label} bits", []).append(bits_per_target_weight(run))
    variants = {label: v for label, v in variants.items() if label not in refused}
    lines = ["| task | " + " | ".join(variants) + " |", "|---" * (1 + len(variants)) + "|"]
    lines += [f"| {task} | " + " | ".join(_mean_std(by[label]) for label in variants) + " |"
              for task, by in results.items()]
    lines.append("| stored per task (MB) | " + " | ".join(f"{statistics.mean(stored[label]) / 1e6:.2f}"
                                                          for label in variants) + " |")
    lines.append("| bits per target weight per task | " + " | ".join(
        f"{statistics.mean(stored[f'{label} bits']):.2f}" if f"{label} bits" in stored else "-"
        for label in variants) + " |")
    lines += [f"\n{label}: not on this checkpoint ({reason})" for label, reason in refused.items()]
    return "\n".join(lines)


def adapt_study(seeds=(0, 1, 2), device: str = "cpu", configs: Path = CONFIGS, blocks=("mlp", "conv"),
                target_domain: str = "edges", steps: int = 1000) -> str:
    """Markdown table, as the compositional paper's Table 3: the digit task's test accuracy on an
    unlabelled target domain without adaptation, after adapting its mixture weights alone, and after
    adapting the input adapter instead (the paper's baseline), with their parameter counts; a mixture
    model trained on configs/adapt.yaml's source domains, with the mlp and the conv block."""
    lines = ["| block | target | no adaptation | mixture weights only | input adapter only |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for block in blocks:
            before: list[float] = []
            counts: dict[str, int] = {}
            after: dict[Literal["routing", "encoder"], list[float]] = {"routing": [], "encoder": []}
            for seed in seeds:
                config = load_config(Path(configs) / "adapt.yaml",
                                     [f"seed={seed}", f"name=adapt-{block}-{seed}", f"model.block={block}"])
                parent = open_run(train(config, tmp, device=device, quiet=True))
                for mode in after:
                    child = open_run(adapt(parent, AdaptPlan(target_domain, train=mode, steps=steps), tmp, device))
                    report = child.summary()["adapt"]
                    after[mode].append(child.summary()["metrics"][report["target"]]["test"])
                    counts[mode] = report["trainable"]
                before.append(report["target_test_before"])
            lines.append(f"| {block} | `{target_domain}` | {_mean_std(before)} | {_mean_std(after['routing'])} "
                         f"({counts['routing']:,}) | {_mean_std(after['encoder'])} ({counts['encoder']:,}) |")
    return "\n".join(lines)


LAMBDAS = [round(0.1 * i, 1) for i in range(1, 16)]  # the grid a merge's lambda is picked from, on dev
TALL_LAMBDAS = [0.2, 0.3, 0.4, 0.5, 0.6]  # the TALL paper's grid of each task's lambda


def merges_study(seeds=(0, 1, 2), device: str = "cpu", configs: Path = CONFIGS, config: str = "wordnet-minilm.yaml",
                 adamerging_steps: int = 300, finetunes: str | None = None) -> str:
    """Markdown table: each task's test accuracy as a share of its own fine-tune's (normalised) under
    task arithmetic, TIES, DARE-TIES (over `seeds`), TALL masks, consensus and AdaMerging, every
    lambda picked by the mean normalised dev accuracy (as the papers pick theirs); the fine-tunes are
    the config's tasks under a fine-tune per task (seed 0), imported as task vectors."""
    with tempfile.TemporaryDirectory() as tmp:
        vectors = imported_finetunes(Path(configs) / config, device, tmp, finetunes)
        individual = vectors.summary()["metrics"]

        def normalised(metrics: dict) -> dict[str, dict[str, float]]:
            return {t: {split: m[split] / individual[t][split] for split in ("dev", "test")}
                    for t, m in metrics.items()}

        def scores(recipe: dict) -> dict[str, dict[str, float]]:
            metrics = evaluate_run(vectors, {**vectors.routing()[0], "recipe": recipe}, device)["metrics"]
            return normalised(metrics)

        def best(recipes: list[dict]) -> tuple[dict, dict[str, dict[str, float]]]:
            """Of the recipes, the one of highest mean normalised dev accuracy, and its scores."""
            scored = [(r, scores(r)) for r in recipes]
            return max(scored, key=lambda pair: statistics.mean(v["dev"] for v in pair[1].values()))

        columns: dict[str, list[dict[str, dict[str, float]]]] = {}
        chosen = {}
        for method in ("task_arithmetic", "ties", "consensus"):
            recipe, scored = best([{"method": method, "lambda": lam} for lam in LAMBDAS])
            columns[method], chosen[method] = [scored], recipe["lambda"]
        columns["dare_ties"] = [best([{"method": "dare_ties", "lambda": lam, "seed": seed} for lam in LAMBDAS])[1]
                                for seed in seeds]
        arithmetic, tasks = chosen["task_arithmetic"], vectors.task_names
        uniform = {lam: scores({"method": "tall", "lambda": 1.0, "tall_lambdas": [lam] * len(tasks)})
                   for lam in TALL_LAMBDAS}  # a task's mask depends on its own lambda alone
        tall_lambdas = [max(TALL_LAMBDAS, key=lambda lam: uniform[lam][task]["dev"]) for task in tasks]
        columns["tall"] = [scores({"method": "tall", "lambda": 1.0, "tall_lambdas": tall_lambdas})]
        start = {**vectors.routing()[0], "recipe": {"method": "task_arithmetic", "lambda": arithmetic}}
        plan = FinetunePlan(adamerging_steps, "routing", routing=(start, vectors.routing()[1]))
        child = open_run(finetune(vectors, plan, tmp, device))
        columns["AdaMerging"] = [normalised(child.summary()["metrics"])]
        learned = child.routing()[0]["recipe"]["coefficients"]
    names = list(columns)
    lines = ["| task | individual | " + " | ".join(names) + " |", "|---" * (2 + len(names)) + "|"]
    for task in vectors.task_names:
        lines.append(f"| {task} | {individual[task]['test']:.3f} | "
                     + " | ".join(_mean_std([c[task]["test"] for c in columns[n]]) for n in names) + " |")
    lines.append("| mean | 1 | " + " | ".join(_mean_std([statistics.mean(c[t]["test"] for t in c) for c in columns[n]])
                                              for n in names) + " |")
    picked = ", ".join(f"{m} {lam}" for m, lam in chosen.items())
    spread = f"{min(map(min, learned)):.2f} .. {max(map(max, learned)):.2f}" if learned else "all 1"
    return "\n".join(lines) + (f"\n\nlambda picked on dev: {picked}; TALL's lambdas {tall_lambdas}; AdaMerging's "
                               f"coefficients after {adamerging_steps} steps: {spread}")


STUDIES: dict[str, Callable[..., str]] = {
    "signatures": signature_study, "transfer": transfer_study, "forgetting": forgetting_study,
    "pruning": pruning_study, "muir": muir_study, "blocks": blocks_study, "domains": domains_study,
    "code_tokens": code_tokens_study, "moe": moe_study, "sharing": sharing_study, "adapt": adapt_study,
    "pretrained": pretrained_study, "merges": merges_study, "matrix_merges": matrix_merges_study
}
