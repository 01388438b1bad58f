"""Continuing from a finished run into a new run linked to it (its parent).

- `train="routing"`: train only the scheme's routing parameters (mixture: the signatures xi), with
  every template frozen; with new tasks, also their heads (the paper's transfer by mixture weights).
- `train="all"`: train everything (full fine-tuning, the baseline transfer is compared with).
- `train="new"`: only for new tasks, in schemes that isolate tasks (mann): the scheme admits them
  (RSN2 on the weights no old task owns), then they train with every old task's parameters and the
  shared encoders frozen, so the old tasks' outputs stay bit-identical.
New tasks are appended after the parent's; their signature starts random or as a copy of an
existing task's (`init_from`). The parent run is never modified.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from lsmn_core import routing
from lsmn_core.config import TaskConfig
from lsmn_core.data import load_tasks
from lsmn_core.errors import ConfigError
from lsmn_core.model import MultitaskModel, build_model
from lsmn_core.schemes.masked import MaskedScheme
from lsmn_core.store import Run, RunWriter
from lsmn_core.trainer import DeviceTasks, Reporter, TrainingSession, resolve_device, summarize


def inherit_weights(parent: MultitaskModel, child: MultitaskModel) -> None:
    """Copy the parent's parameters and masks into the child; per-task tensors ([T, ...]) fill the
    parent's task rows, so the child's extra (new) tasks keep their fresh values."""
    child_state = child.state_dict()
    with torch.no_grad():
        for name, value in parent.state_dict().items():
            target = child_state[name]
            if target.shape == value.shape:
                target.copy_(value)
            else:  # a per-task tensor grown by the new tasks
                target[: value.shape[0]].copy_(value)
        if isinstance(parent.body, MaskedScheme):  # asked of the scheme: masks() would unpack them all
            for task in range(len(parent.specs)):
                child.body.set_task_masks(task, parent.body.task_masks(task))


def count_trainable(model: MultitaskModel, trainable, task_ids: list[int]) -> dict:
    """Parameters that training `task_ids` can change: per-task tensors count only those tasks' rows."""
    restricted = {}
    for t in task_ids:
        for name, mask in model.body.update_masks(t).items():
            key = f"body.{name}"
            restricted[key] = restricted.get(key, torch.zeros_like(mask)) | mask
    total = heads = 0
    for name, p in model.named_parameters():
        if p.requires_grad and trainable(name):
            n = int(restricted[name].sum()) if name in restricted else p.numel()
            total += n
            heads += n if name.startswith("heads.") else 0
    return {"trainable": total, "trainable_besides_heads": total - heads}


def finetune(run: Run, steps: int, train: str = "routing", add_tasks: list[TaskConfig] = (),
             init_from: str | None = None, edited=None, out_dir: str | Path | None = None,
             device: str = "auto", quiet: bool = True, with_norms: bool = False) -> Path:
    """Fine-tune `run` into a new run (under out_dir, default: beside the parent); returns its path.

    `with_norms` also trains the per-task norm parameters (mixture runs with mix_norm: false)."""
    if train not in ("routing", "all", "new"):
        raise ConfigError(f"train must be 'routing', 'all' or 'new', got {train!r}")
    if train == "new" and not add_tasks:
        raise ConfigError("train='new' needs at least one new task")
    torch_device = resolve_device(device)
    parent_config = run.config()
    config = copy.deepcopy(parent_config)
    config.tasks = list(parent_config.tasks) + list(add_tasks)
    config.train.steps = steps
    config.name = f"{parent_config.name}-ft"
    parent_names = [t.name for t in parent_config.tasks]
    new_names = [t.name for t in add_tasks]
    if set(parent_names) & set(new_names):
        raise ConfigError(f"task {sorted(set(parent_names) & set(new_names))[0]!r} is already in the run")
    if init_from is not None and init_from not in parent_names:
        raise ConfigError(f"init_from: no task {init_from!r} in the run (tasks: {', '.join(parent_names)})")

    parent = run.load_model()
    if edited is not None:
        doc, arrays = edited if isinstance(edited, tuple) else routing.read(Path(edited))
        routing.apply(parent, routing.decode(doc, arrays, parent))
    data = load_tasks(config.tasks, config.data)
    model = build_model([d.spec for d in data], config)
    inherit_weights(parent, model)
    if not add_tasks:  # routing state that is not a parameter (MoE's allowed experts) carries over too
        routing.apply_buffers(model, routing.decode(*routing.encode(parent), model))
    routing_params = {f"body.{n}" for n in model.body.routing_parameters()}
    if train == "routing" and not routing_params:
        raise ConfigError(f"the {run.scheme} scheme has no trainable routing; use train='all'")
    norm_params = {n for n, _ in model.named_parameters() if n.startswith("body.norms.")}
    if with_norms and not norm_params:
        raise ConfigError("this run has no per-task norm parameters (they need scheme.mix_norm: false)")
    if init_from is not None:
        with torch.no_grad():
            for name in routing_params | (norm_params if with_norms else set()):
                param = dict(model.named_parameters())[name]
                for new in range(len(parent_names), len(config.tasks)):
                    param[new] = param[parent_names.index(init_from)]
    model.to(torch_device)

    new_heads = {f"heads.{n}." for n in new_names}
    if train == "all":
        def trainable(name: str) -> bool:
            return True
    elif train == "new":  # body updates are confined to the new tasks' masks and rows (update_masks)
        def trainable(name: str) -> bool:
            return name.startswith("body.") or any(name.startswith(h) for h in new_heads)
    else:
        def trainable(name: str) -> bool:
            return (name in routing_params or any(name.startswith(h) for h in new_heads)
                    or (with_norms and name in norm_params))
    task_ids = list(range(len(parent_names), len(config.tasks))) if add_tasks else list(range(len(parent_names)))

    writer = RunWriter(Path(out_dir) if out_dir else run.path.parent, config, [d.spec for d in data],
                       str(torch_device), parent=run.id)
    start = time.monotonic()
    try:
        session = TrainingSession(model, DeviceTasks(data, torch_device), config, Reporter(writer, quiet), trainable)
        report = model.body.admit_tasks(session, task_ids) if train == "new" else {}
        counts = count_trainable(model, trainable, task_ids)
        session.train(task_ids, steps, "finetune")
        summary = summarize(session, report.get("summary", {}), time.monotonic() - start)
        summary["finetune"] = {"parent": run.id, "train": train, "tasks": [config.tasks[t].name for t in task_ids],
                               "init_from": init_from, **counts}
        writer.save_model(model)
        writer.finish(summary)
    except Exception as exc:
        writer.set_status("failed", f"{type(exc).__name__}: {exc}")
        raise
    return writer.path
