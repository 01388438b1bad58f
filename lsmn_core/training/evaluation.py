"""Evaluating a stored run, optionally under an edited routing, without changing the run."""

from __future__ import annotations

from pathlib import Path

from lsmn_core.store import routing
from lsmn_core.data.loading import check_data_fits, load_tasks
from lsmn_core.pretrained.text import tokenization
from lsmn_core.store.runs import DATA_CACHE, Run
from lsmn_core.training.trainer import DeviceTasks, evaluate_task, evaluation_mode, resolve_device


def evaluate_run(run: Run, edited: str | Path | dict | tuple | None = None, device: str = "auto",
                 cache: Path | None = None) -> dict:
    """Per-task dev/test metrics of `run`, with the change against the stored metrics.

    `edited` is an edited routing: a path to a routing pair, a (document, arrays) pair, or a
    routing.json document alone (masks, if any, then come from the run's routing.safetensors).
    The run is not changed; text tokenized for it is cached in `cache` (default: the runs folder's
    data cache).
    """
    return next(evaluate_each(run, [edited], device, cache))


def evaluate_each(run: Run, edits: list, device: str = "auto", cache: Path | None = None,
                  splits: tuple[str, ...] = ("dev", "test")):
    """evaluate_run's answer for each edited routing in turn (on `splits`), the model built and the
    data loaded once for all of them (a sweep of a merge's lambda evaluates 30 routings)."""
    torch_device = resolve_device(device)
    model = run.load_model(torch_device)
    config = run.config()
    data = load_tasks(config.tasks, config.data, tokenization(config, cache or run.path.parent / DATA_CACHE))
    check_data_fits(model.specs, data)
    tasks = DeviceTasks(data, torch_device, config)
    stored = run.summary()["metrics"] if (run.path / "summary.json").is_file() else {}
    for edited in edits:
        if edited is not None:
            if isinstance(edited, dict):
                edited = (edited, run.routing()[1])
            doc, arrays = edited if isinstance(edited, tuple) else routing.read(Path(edited))
            routing.apply(model, routing.decode(doc, arrays, model))
        metrics = {}
        with evaluation_mode(model):  # switched once for all tasks
            for t, spec in enumerate(tasks.specs):
                entry: dict[str, str | float] = {"metric": spec.metric}
                for split in splits:
                    entry[split] = evaluate_task(model, tasks, t, split)[1]
                    if spec.name in stored:
                        entry[f"{split}_delta"] = entry[split] - stored[spec.name][split]
                metrics[spec.name] = entry
        source = None if edited is None else "edited routing" if isinstance(edited, tuple) else str(edited)
        yield {"run": run.id, "routing": source, "metrics": metrics, "params": model.parameter_counts()}
