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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from lsmn_core.store import routing
from lsmn_core.config import TaskConfig
from lsmn_core.data.loading import check_data_fits, load_tasks
from lsmn_core.data.tasks import task_name_problem
from lsmn_core.errors import ConfigError
from lsmn_core.network.model import MultitaskModel
from lsmn_core.schemes import build_model, check_config
from lsmn_core.training.session import Phase, SearchReport
from lsmn_core.pretrained.text import tokenization
from lsmn_core.store.runs import DATA_CACHE, Run, RunWriter, check_runs_folder
from lsmn_core.training.trainer import DeviceTasks, Reporter, TrainingSession, resolve_device, summarize


@dataclass
class FinetunePlan:
    """What a fine-tune trains: for how many steps, which parameters (`train`: routing, all or new),
    which tasks it adds, where new tasks' routing starts (`init_from`: a parent task, default random),
    an edited routing to start from (a routing pair's path, or its (document, arrays)), and whether
    per-task norms train with the routing (`with_norms`: mixture runs with mix_norm: false)."""

    steps: int = 500
    train: Literal["routing", "all", "new"] = "routing"
    add_tasks: list[TaskConfig] = field(default_factory=list)
    init_from: str | None = None
    routing: str | Path | tuple | None = None
    with_norms: bool = False

    def check(self, parent_tasks: list[str]) -> None:
        """Refuse a plan that cannot apply to a run of `parent_tasks` (ConfigError)."""
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"steps must be a whole number >= 1, got {self.steps!r:.20}")
        if self.train not in ("routing", "all", "new"):
            raise ConfigError(f"train must be 'routing', 'all' or 'new', got {self.train!r}")
        if self.train == "new" and not self.add_tasks:
            raise ConfigError("train='new' needs at least one new task")
        for task in self.add_tasks:
            if problem := task_name_problem(task.name):
                raise ConfigError(f"--add-task: {str(task.name)[:40]!r} {problem}")
        clash = sorted(set(parent_tasks) & {t.name for t in self.add_tasks})
        if clash:
            raise ConfigError(f"task {clash[0]!r} is already in the run")
        if self.init_from is not None and self.init_from not in parent_tasks:
            raise ConfigError(f"init_from: no task {self.init_from!r} in the run (tasks: {', '.join(parent_tasks)})")


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
        child.body.inherit_routing(parent.body)  # routing buffers outside the state dict (masks)


def count_trainable(model: MultitaskModel, trainable, task_ids: list[int]) -> dict:
    """Parameters that training `task_ids` can change: per-task tensors count only those tasks' rows."""
    restricted: dict[str, torch.Tensor] = {}
    for t in task_ids:
        for name, mask in model.body.update_masks(t).items():
            key = model.model_name(name)
            restricted[key] = restricted.get(key, torch.zeros_like(mask)) | mask
    total = heads = 0
    for name, p in model.named_parameters():
        if p.requires_grad and trainable(name):
            n = int(restricted[name].sum()) if name in restricted else p.numel()
            total += n
            heads += n if name.startswith("heads.") else 0
    return {"trainable": total, "trainable_besides_heads": total - heads}


def finetune(run: Run, plan: FinetunePlan, out_dir: str | Path | None = None, device: str = "auto",
             quiet: bool = True) -> Path:
    """Fine-tune `run` as `plan` says into a new run (under out_dir, default: beside the parent);
    returns its path."""
    parent_names = run.task_names
    plan.check(parent_names)
    config = child_config(run, plan.add_tasks, plan.steps)
    task_ids = list(range(len(parent_names), len(config.tasks))) if plan.add_tasks else list(range(len(parent_names)))

    def work(session: TrainingSession) -> dict:
        report = session.model.body.admit_tasks(session, task_ids) if plan.train == "new" else SearchReport()
        counts = count_trainable(session.model, session.trainable, task_ids)
        own = session.model.body.finetune_phase(session, task_ids, plan.steps) if plan.train == "routing" else None
        session.train(own or Phase("finetune", task_ids, plan.steps))
        return {"search": report.summary, "finetune": {
            "parent": run.id, "train": plan.train, "tasks": [config.tasks[t].name for t in task_ids],
            "init_from": plan.init_from, **counts}}

    return train_child(run, config, lambda specs: child_model(run, plan, specs, config),
                       lambda model: _trainable(plan, model), work, out_dir, device, quiet)


def child_config(run: Run, add_tasks: list[TaskConfig], steps: int):
    """The parent's config with `add_tasks` appended (checked against the scheme) and `steps` steps."""
    config = copy.deepcopy(run.config())
    config.tasks = list(config.tasks) + list(add_tasks)
    check_config(config)  # the added tasks against the scheme (MANN's shares must still fit)
    config.train.steps = steps
    config.name = f"{config.name}-ft"
    return config


def train_child(run: Run, config, make_model: Callable, make_trainable: Callable, work: Callable,
                out_dir: str | Path | None, device: str, quiet: bool) -> Path:
    """A new run linked to `run` (its parent), under out_dir (default: beside the parent): the model
    `make_model(specs)` builds, trained by `work(session)`, whose returned keys join the summary
    ("search": the report's summary); a failure marks the run failed. Returns its path."""
    torch_device = resolve_device(device)
    folder = check_runs_folder(Path(out_dir) if out_dir else run.path.parent)
    data = load_tasks(config.tasks, config.data, tokenization(config, folder / DATA_CACHE))
    check_data_fits(run.specs, data)
    model = make_model([d.spec for d in data]).to(torch_device)
    writer = RunWriter(folder, config, [d.spec for d in data], str(torch_device), parent=run.id)
    writer.record_source(model)
    start = time.monotonic()
    reporter = None
    try:
        reporter = Reporter(writer, quiet, config.train.tensorboard)
        session = TrainingSession(model, DeviceTasks(data, torch_device, config), config, reporter,
                                  make_trainable(model))
        extra = work(session)
        summary = summarize(session, extra.pop("search", {}), time.monotonic() - start)
        summary.update(extra)
        writer.save_model(model)
        writer.finish(summary)
    except Exception as exc:
        writer.end(exc)
        raise
    finally:
        if reporter:
            reporter.close()
    return writer.path


def child_model(run: Run, plan: FinetunePlan, specs, config) -> MultitaskModel:
    """The child's model: the parent's weights and routing (edited, if the plan says so) for the
    parent's tasks, fresh ones for new tasks, whose routing may start as `init_from`'s."""
    parent = run.load_model()
    if plan.routing is not None:
        doc, arrays = plan.routing if isinstance(plan.routing, tuple) else routing.read(Path(plan.routing))
        routing.apply(parent, routing.decode(doc, arrays, parent))
    model = build_model(specs, config)
    inherit_weights(parent, model)
    if not plan.add_tasks:  # routing state that is not a parameter (MoE's allowed experts) carries over too
        routing.apply_buffers(model, routing.decode(*routing.encode(parent), model))
    if plan.train == "routing" and not model.body.routing_parameters():
        raise ConfigError(f"the {run.scheme} scheme has no trainable routing; use train='all'")
    norm_params = _norm_params(model)
    if plan.with_norms and not norm_params:
        raise ConfigError("this run has no per-task norm parameters (they need scheme.mix_norm: false)")
    if plan.init_from is not None:
        parameters = dict(model.named_parameters())
        source = run.task_names.index(plan.init_from)
        with torch.no_grad():
            for name in _routing_params(model) | (norm_params if plan.with_norms else set()):
                for new in range(len(run.task_names), len(specs)):
                    parameters[name][new] = parameters[name][source]
    return model


def _routing_params(model: MultitaskModel) -> set[str]:
    return {f"body.{n}" for n in model.body.routing_parameters()}


def _norm_params(model: MultitaskModel) -> set[str]:
    return {f"body.{n}" for n in model.body.per_task_norms()}


def _trainable(plan: FinetunePlan, model: MultitaskModel) -> Callable[[str], bool]:
    """Which parameters the plan trains: everything (all); the body, confined to the new tasks'
    masks and rows by update_masks, and the new heads (new); or the routing parameters, the new
    heads and, with with_norms, the per-task norms (routing)."""
    new_heads = tuple(f"heads.{t.name}." for t in plan.add_tasks)
    if plan.train == "all":
        return lambda name: True
    if plan.train == "new":
        return lambda name: name.startswith("body.") or name.startswith(new_heads)
    chosen = _routing_params(model) | (_norm_params(model) if plan.with_norms else set())
    return lambda name: name in chosen or name.startswith(new_heads)
