"""`lsmn vectors` and `lsmn merge`, the task vectors' commands (registry lsmn.commands)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from contextlib import contextmanager
from dataclasses import replace
from fnmatch import fnmatch
from pathlib import Path

from tqdm import tqdm

from lsmn_core.commands import Command
from lsmn_core.errors import ConfigError
from lsmn_core.merges import MERGES
from lsmn_core.merges.method import COMMON, Recipe
from lsmn_core.schemes.vectors.evaluation import LAMBDAS, evaluate_merge, lambda_sweep, seed_spread, table_lines
from lsmn_core.schemes.vectors.importing import from_finetunes, from_run
from lsmn_core.schemes.vectors.memory import merge_memory
from lsmn_core.schemes.vectors.scheme import INDIVIDUAL
from lsmn_core.schemes.vectors.writer import check_out, check_task, vectors_body, write_merge
from lsmn_core.store.runs import open_run


def _vectors_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="+", metavar="RUN | BASE FINETUNE...",
                   help="a pretrained run with a fine-tune per task, or a checkpoint and two or more fine-tunes of it "
                        "(model folders, or weights files with --class)")
    p.add_argument("--names", help="the tasks' names, comma-separated (default: the fine-tunes' folder names)")
    p.add_argument("--data", help="fine-tunes: a config whose tasks of those names give each task's data")
    p.add_argument("--class", dest="module_class", metavar="PACKAGE.MODULE:CLASS",
                   help="BASE and the fine-tunes are weights files of this module")
    p.add_argument("--density", type=float, default=0.1,
                   help="each task's mask: this share of its largest deltas per tensor (default 0.1)")
    p.add_argument("--vocab", choices=("same", "base"), default="same",
                   help="base: a fine-tune whose tokenizer grew gives the vector of the checkpoint's rows, its added "
                        "rows left out of every merge (default same: a grown vocabulary is refused)")
    p.add_argument("--out", help="the folder of runs to put the run in (default: beside RUN, else runs)")


def _run_vectors(args: argparse.Namespace) -> None:
    if not 0 < args.density <= 1:
        raise ConfigError(f"--density must be in (0, 1], got {args.density}")
    if len(args.sources) == 1:
        if args.names or args.data or args.module_class or args.vocab != "same":
            raise ConfigError("--names, --data, --class and --vocab belong to fine-tunes; a run names its own tasks")
        path = from_run(open_run(args.sources[0]), args.out, args.density)
    else:
        if args.data is None:
            raise ConfigError("--data: give a config whose tasks give the fine-tunes' data (by their names)")
        names = args.names.split(",") if args.names else None
        path = from_finetunes(args.sources[0], args.sources[1:], args.data, args.out or "runs", names, args.density,
                              args.module_class, vocab=args.vocab)
    print(path)


def _merge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a task vectors run (lsmn vectors)")
    p.add_argument("--method", help=f"one of {', '.join(MERGES.names())} (default: the run's recipe's)")
    p.add_argument("--lambda", dest="lam", help="the scale of the merged delta (default: the method's), or auto: "
                                                "the best of 0.1 to 3.0 by the mean normalised metric on dev")
    p.add_argument("--density", type=float, help="what ties and dare keep (default 0.2)")
    p.add_argument("--seed", type=int, help="dare's random drops (default 0); the merge written is this seed's, and "
                                             "the evaluation adds the spread over it and the next two")
    p.add_argument("--task", help="tall, tsv_c: the task whose own network to write")
    p.add_argument("--common", type=float,
                   help=f"iso_cts: the share of directions common to all tasks (default {COMMON})")
    p.add_argument("--keep", type=float, help="tsv_c: the share of each weight's numbers a task keeps (default: its "
                                              "top floor(r / T) singular triplets)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="tsv_m, iso_c, iso_cts: weights whose names match (fnmatch, e.g. '*.layer.5.*') take the "
                        "mean instead of the SVD path, besides the embeddings and output projection; repeatable")
    p.add_argument("--out", required=True, help="a new folder for the merged network")
    p.add_argument("--no-eval", action="store_true", help="write the merge without evaluating it")
    p.add_argument("--json", action="store_true", help="print the evaluation as JSON")


def lambda_value(text: str) -> float:
    """--lambda's number: positive and finite (auto is read before)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"--lambda must be a positive number or auto, got {text!r:.40}")
    return value


def merge_recipe(run, args: argparse.Namespace) -> Recipe:
    """The run's recipe, with what the command line gives in its place (a new method starts from
    its own lambda and plain coefficients)."""
    stored = run.routing_state()["recipe"]
    method = args.method or stored.method
    if method == INDIVIDUAL:
        raise ConfigError(f"--method: give one of {', '.join(MERGES.names())} (the run holds the individual "
                          "fine-tunes)")
    changed = method != stored.method
    default = MERGES.get(method, "--method").default_lambda
    given = None if args.lam in (None, "auto") else lambda_value(args.lam)
    recipe = Recipe(method, given if given is not None else default if changed else stored.lam,
                    args.density if args.density is not None else stored.density,
                    args.seed if args.seed is not None else stored.seed,
                    [] if changed else stored.coefficients, stored.tall_lambdas, stored.consensus_k,
                    args.exclude or ([] if changed else stored.exclude),
                    args.keep if args.keep is not None else None if changed else stored.keep,
                    args.common if args.common is not None else COMMON if changed else stored.common)
    if args.keep is not None and not MERGES.get(method).uses_keep:
        raise ConfigError(f"--keep: {method} keeps no share of its own (tsv_c does)")
    if args.common is not None and not MERGES.get(method).uses_common:
        raise ConfigError(f"--common: {method} has no common space (iso_cts has)")
    body = vectors_body(run)
    for pattern in args.exclude:
        if not any(fnmatch(name, pattern) for name in body.targets):
            raise ConfigError(f"--exclude {pattern!r:.60}: matches none of the run's {len(body.targets)} weights "
                              f"(such as {next(iter(body.targets), '?')})")
    return recipe.check(len(run.task_names), body.columns)


@contextmanager
def stage_bars():
    """`progress(stage, done, total)` for a long write: a bar on stderr for each stage, in tensors,
    gone when it ends."""
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            for finished in bars.values():  # the stage before is done: its line goes to the new one
                finished.close()
            bars[stage] = tqdm(total=total, desc=f"writing {stage}", unit="tensor", leave=False)
        bars[stage].update(done - bars[stage].n)

    try:
        yield progress
    finally:
        for bar in bars.values():
            bar.close()


def _run_merge(args: argparse.Namespace) -> None:
    run = open_run(args.run)
    recipe = merge_recipe(run, args)
    body = vectors_body(run)
    check_out(Path(args.out), run, body.inputs)
    check_task(run, recipe, args.task)  # before the evaluation, not after it
    print(merge_memory(body.vectors(verify=False), MERGES.get(recipe.method)(), recipe, not args.no_eval).line(),
          flush=True)
    sweep = None
    if args.lam == "auto":
        def progress(done: int, lam: float, mean: float) -> None:
            print(f"lambda {lam:.1f}: mean normalised dev {mean:.4f} ({done} of {len(LAMBDAS)})", file=sys.stderr)

        lam, sweep = lambda_sweep(run, recipe, progress)
        recipe = replace(recipe, lam=lam)
        best = next(row["dev_normalised"] for row in sweep if row["lambda"] == lam)
        print(f"lambda auto: {lam:.1f}, the best mean normalised metric on dev ({best:.4f})")
    for task, tensors in run.summary().get("vectors", {}).get("added_rows", {}).items():
        print(f"left out of the merge: {task}'s added vocabulary rows ("
              + ", ".join(f"{rows} of {name}" for name, rows in tensors.items()) + ")")
    result = None if args.no_eval else evaluate_merge(run, recipe)  # before anything is written
    if result is not None and MERGES.get(recipe.method).random:
        result = {**result, "seed_spread": seed_spread(run, recipe, result)}
    with stage_bars() as progress:
        out = write_merge(run, recipe, args.out, args.task, progress)
    stored = json.loads((out / "lsmn-merge.json").read_text()).get("stored")
    if stored:
        print(f"stored in {stored['file']}: {stored['share']:.1%} of the task vectors' numbers "
              f"({stored['numbers_per_task']:,} per task), each task's delta rebuilt from them")
    if result is not None:
        result = {**result, "lambda": recipe.lam, **({"lambda_sweep": sweep} if sweep else {})}
        (out / "lsmn-evaluation.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result) if args.json else "\n".join(table_lines(recipe.method, result)))
    print(out)


VECTORS = Command("import the fine-tunes of one checkpoint as a task vectors run: masks of what each task "
                  "changed, how the tasks interfere; prints the run's path last", _vectors_arguments, _run_vectors)
MERGE = Command("merge a task vectors run's fine-tunes (task arithmetic, TIES, DARE, TALL, consensus, TSV-M, "
                "Iso-C, Iso-CTS) or compress them (TSV-C) into a new folder in the checkpoint's format, evaluated "
                "on every task; prints its path last", _merge_arguments, _run_merge)
