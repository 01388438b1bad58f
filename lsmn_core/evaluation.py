"""Evaluating a stored run, optionally under an edited routing, without changing the run."""

from __future__ import annotations

from pathlib import Path

from lsmn_core import routing
from lsmn_core.data import load_tasks
from lsmn_core.store import Run
from lsmn_core.trainer import DeviceTasks, evaluate_task, resolve_device


def evaluate_run(run: Run, routing_path: str | Path | None = None, device: str = "auto") -> dict:
    """Per-task dev/test metrics of `run` (under the routing at `routing_path` if given), with the
    stored metrics and the change against them."""
    torch_device = resolve_device(device)
    model = run.load_model(torch_device)
    if routing_path is not None:
        doc, arrays = routing.read(Path(routing_path))
        routing.apply(model, {k: v.to(torch_device) for k, v in routing.decode(doc, arrays, model).items()})
    config = run.config()
    tasks = DeviceTasks(load_tasks(config.tasks, config.data), torch_device)
    stored = run.summary()["metrics"] if (run.path / "summary.json").is_file() else {}
    metrics = {}
    for t, spec in enumerate(tasks.specs):
        entry = {"metric": spec.metric}
        for split in ("dev", "test"):
            entry[split] = evaluate_task(model, tasks, t, split)[1]
            if spec.name in stored:
                entry[f"{split}_delta"] = entry[split] - stored[spec.name][split]
        metrics[spec.name] = entry
    return {"run": run.id, "routing": str(routing_path) if routing_path else None, "metrics": metrics,
            "params": model.parameter_counts()}
