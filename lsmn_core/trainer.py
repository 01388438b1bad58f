"""Training: one loop for every scheme, read top to bottom.

`train()` loads the data, builds the model, lets the scheme search its routing (sparse: IMP with
rewinding), then trains all tasks together, sampling one task per step as the sparse-sharing slides
do. Evaluation every `eval_every` steps goes to metrics.jsonl; early stopping keeps the best dev state.
"""

from __future__ import annotations

import copy
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from lsmn_core import checkpoint, distributed
from lsmn_core.distributed import DataParallel
from lsmn_core.data import TaskData, load_tasks
from lsmn_core.errors import ConfigError, RunError, TrainingError
from lsmn_core.model import MultitaskModel, build_model
from lsmn_core.store import RunWriter
from lsmn_core.tasks import TaskSpec, metric_value, score, task_loss


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for, but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


class DeviceTasks:
    """Every task's splits as tensors on the training device, loaded once."""

    def __init__(self, data: list[TaskData], device: torch.device):
        self.device = device
        self.specs = [d.spec for d in data]
        self.splits = [{k: (torch.as_tensor(x, device=device), torch.as_tensor(y, device=device))
                        for k, (x, y) in d.splits.items()} for d in data]

    def batch(self, task: int, size: int, generator: torch.Generator, split: str = "train"):
        x, y = self.splits[task][split]
        idx = torch.randint(len(y), (min(size, len(y)),), generator=generator).to(x.device, non_blocking=True)
        return x[idx], y[idx]


@torch.no_grad()
def evaluate_task(model: MultitaskModel, tasks: DeviceTasks, task: int, split: str,
                  chunk: int = 2048) -> tuple[float, float]:
    """(loss, metric) of one task on one split, in eval mode."""
    was_training = model.training
    model.eval()
    x, y = tasks.splits[task][split]
    spec = tasks.specs[task]
    outputs = torch.cat([model(x[i : i + chunk], task) for i in range(0, len(y), chunk)])
    model.train(was_training)
    return task_loss(spec, outputs, y).item(), metric_value(spec, outputs, y)


class TaskSampler:
    """Which task trains next: proportional to training-set size, or round-robin."""

    def __init__(self, tasks: DeviceTasks, task_ids: list[int], mode: str, generator: torch.Generator):
        self.task_ids, self.mode, self.generator, self.i = task_ids, mode, generator, 0
        sizes = torch.tensor([tasks.specs[t].sizes["train"] for t in task_ids], dtype=torch.float)
        self.weights = sizes / sizes.sum()

    def __next__(self) -> int:
        if self.mode == "round_robin":
            self.i += 1
            return self.task_ids[(self.i - 1) % len(self.task_ids)]
        return self.task_ids[torch.multinomial(self.weights, 1, generator=self.generator).item()]


class Reporter:
    """Progress to the terminal (a bar on stderr) and to the run directory (progress.json, metrics)."""

    def __init__(self, writer: RunWriter | None, quiet: bool = False):
        self.writer, self.quiet = writer, quiet

    def bar(self, total: int, phase: str):
        return tqdm(total=total, desc=phase, file=sys.stderr, leave=False, disable=self.quiet,
                    dynamic_ncols=True)

    def progress(self, phase: str, step: int, total: int, message: str = "", force: bool = False):
        if self.writer:
            self.writer.progress(phase, step, total, message, force)

    def log(self, records: list[dict]):
        if self.writer:
            self.writer.log(records)


class BatchLoss(nn.Module):
    """The summed loss of one batch per task (each weighted); same-shaped batches go through the
    model together. A module, so that DistributedDataParallel can wrap it."""

    def __init__(self, model: MultitaskModel, specs: list[TaskSpec]):
        super().__init__()
        self.model, self.specs = model, specs

    def forward(self, step_tasks: list[int], batches: list[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
        xs = [x for x, _, _ in batches]
        if len(xs) > 1 and all(x.shape == xs[0].shape for x in xs):
            outputs = self.model.forward_tasks(torch.stack(xs), step_tasks)
        else:
            outputs = [self.model(x, t) for x, t in zip(xs, step_tasks)]
        body = self.model.body
        return sum(weight * task_loss(self.specs[t], out, y) + body.penalty(t)
                   for t, out, (_, y, weight) in zip(step_tasks, outputs, batches))


class TrainingSession:
    """What a training phase needs: the model, the data, the config, and where to report."""

    def __init__(self, model: MultitaskModel, tasks: DeviceTasks, config, reporter: Reporter,
                 trainable: Callable[[str], bool] | None = None, parallel: DataParallel | None = None):
        self.model, self.tasks, self.config, self.reporter = model, tasks, config, reporter
        self.trainable = trainable  # which parameters every phase of this session may train (None: all)
        self.parallel = parallel  # under torchrun: this process's share of the data-parallel work
        self.batch_loss = BatchLoss(model, tasks.specs)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.task_generators: dict[int, torch.Generator] = {}  # tasks that draw from their own generator
        self.step = 0  # global step over all phases, for metrics.jsonl

    def evaluate(self, task: int, split: str) -> tuple[float, float]:
        return evaluate_task(self.model, self.tasks, task, split)

    def evaluate_tasks(self, task_ids: list[int], split: str, phase: str) -> float:
        """Evaluate, log the records, and return the mean 'higher is better' score."""
        records, scores = [], []
        for t in task_ids:
            loss, value = self.evaluate(t, split)
            spec = self.tasks.specs[t]
            records.append({"step": self.step, "phase": phase, "task": spec.name, "split": split,
                            "loss": loss, "metric": spec.metric, "value": value})
            scores.append(score(spec, value))
        self.reporter.log(records)
        return sum(scores) / len(scores)

    def draw(self, step_tasks: list[int], split: str = "train") -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One batch per task from the session's generator, or the task's own where it has one
        (the same in every process)."""
        return [self.tasks.batch(t, self.config.train.batch_size, self.task_generators.get(t, self.generator), split)
                for t in step_tasks]

    def step_loss(self, step_tasks: list[int], split: str = "train") -> torch.Tensor:
        """The summed loss of one whole batch per task, in this process."""
        with self.autocast():
            return self.batch_loss(step_tasks, [(x, y, 1.0) for x, y in self.draw(step_tasks, split)])

    def autocast(self) -> torch.autocast:
        """bf16 autocast for training forwards on CUDA (train.bf16); a no-op elsewhere."""
        cuda = self.tasks.device.type == "cuda"
        return torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda and self.config.train.bf16)

    def update_masks(self, step_tasks: list[int]) -> dict[str, torch.Tensor]:
        """Where this step may change the body: the union of its tasks' update masks."""
        union: dict[str, torch.Tensor] = {}
        for t in step_tasks:
            for name, keep in self.model.body.update_masks(t).items():
                union[name] = union[name] | keep if name in union else keep
        return union

    def train(self, task_ids: list[int], steps: int, phase: str, early_stopping: bool = True,
              sampling: str | None = None, after_step: Callable[[], None] | None = None,
              checkpointing: checkpoint.Checkpointing | None = None) -> int:
        """Train `task_ids` (one sampled task per step, or all with sampling "all") for up to `steps`.

        With early stopping, dev is evaluated every eval_every steps and the best state is restored.
        `sampling` overrides the config's train.sampling for this phase; `after_step` runs after
        every optimiser step (the alignment search learns its candidate weights there).
        Only the parameters the session's `trainable` picks are trained (all when it is None).
        With `checkpointing`, every evaluation is followed by a checkpoint, and a loaded one is
        continued from.
        """
        cfg = self.config.train
        trainable = self.trainable
        model, body = self.model, self.model.body
        chosen = {n: p for n, p in model.named_parameters() if p.requires_grad and (trainable is None or trainable(n))}
        frozen = [p for n, p in model.named_parameters() if p.requires_grad and n not in chosen]
        for p in frozen:
            p.requires_grad_(False)
        scales = {f"body.{n}": s for n, s in body.lr_scales().items()}
        by_scale: dict[float, list[torch.Tensor]] = {}  # few groups: AdamW steps a group's tensors together
        for n, p in chosen.items():
            by_scale.setdefault(scales.get(n, 1.0), []).append(p)
        groups = [{"params": params, "lr": cfg.lr * scale} for scale, params in by_scale.items()]
        # fused: one kernel per group instead of a Python loop over tensors (3x faster on a CPU too)
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        sampler = TaskSampler(self.tasks, task_ids, cfg.sampling, self.generator)
        body_params = dict(body.named_parameters())
        parallel = self.parallel
        loss_of = parallel.wrap(self.batch_loss, self.tasks.device) if parallel else self.batch_loss
        best_score, best_state, evals_since_best = -math.inf, None, 0
        model.train()
        bar = self.reporter.bar(steps, phase)
        step = first = 0
        if checkpointing and checkpointing.resume_from:
            loop = checkpoint.restore(checkpointing.resume_from, self, optimizer)
            first, best_score, evals_since_best = loop["step"], loop["best_score"], loop["evals_since_best"]
            best_state = checkpointing.resume_from["best"]
            bar.update(first)
        first_bad = torch.tensor(math.inf, device=self.tasks.device)  # the first step whose loss was not finite
        try:
            for step in range(first + 1, steps + 1):
                step_tasks = task_ids if (sampling or cfg.sampling) == "all" else [next(sampler)]
                batches = self.draw(step_tasks)
                with self.autocast():
                    loss = loss_of(step_tasks, [parallel.shard(b) for b in batches] if parallel
                                   else [(x, y, 1.0) for x, y in batches])
                # noted on the device, read at the next evaluation: no host sync at every step
                first_bad = torch.where(torch.isfinite(loss.detach()), first_bad, first_bad.clamp(max=step))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                restrict = self.update_masks(step_tasks)
                before = {n: body_params[n].detach().clone() for n in restrict}
                optimizer.step()
                with torch.no_grad():
                    for n, keep in restrict.items():
                        body_params[n].copy_(torch.where(keep, body_params[n], before[n]))
                if after_step:
                    after_step()
                self.step += 1
                bar.update()
                self.reporter.progress(phase, step, steps)
                if early_stopping and (step % cfg.eval_every == 0 or step == steps):
                    _stop_if_diverged(first_bad, phase)  # before a NaN weight is evaluated, kept or saved
                    current = self.evaluate_tasks(task_ids, "dev", phase)
                    bar.set_postfix(dev=f"{current:.3f}")
                    if current > best_score:
                        best_score, evals_since_best = current, 0
                        best_state = copy.deepcopy(model.state_dict())
                    else:
                        evals_since_best += 1
                        if cfg.patience and evals_since_best >= cfg.patience:
                            break
                    if checkpointing:
                        checkpoint.save(checkpointing.folder, self, optimizer, {
                            "step": step, "best_score": best_score, "evals_since_best": evals_since_best},
                            best_state, checkpointing.report)
            _stop_if_diverged(first_bad, phase)
        finally:
            bar.close()
            for p in frozen:
                p.requires_grad_(True)
        if best_state is not None:
            model.load_state_dict(best_state)
        self.reporter.progress(phase, step, steps, "done", force=True)
        return step


def _stop_if_diverged(first_bad: torch.Tensor, phase: str) -> None:
    step = first_bad.item()
    if math.isfinite(step):
        raise TrainingError(f"the loss became nan or infinite at step {int(step)} of phase {phase}; "
                            "try a lower train.lr")


def summarize(session: TrainingSession, search_report: dict, seconds: float) -> dict:
    """Final per-task metrics, parameter counts and densities, for summary.json."""
    model, specs = session.model, session.tasks.specs
    model.body.reset_statistics()
    metrics = {}
    for t, spec in enumerate(specs):
        metrics[spec.name] = {"metric": spec.metric}
        for split in ("dev", "test"):
            metrics[spec.name][split] = session.evaluate(t, split)[1]
    density = model.body.density()
    return {
        "metrics": metrics,
        "params": model.parameter_counts(),
        "density": {s.name: density[t].mean().item() for t, s in enumerate(specs)},
        "density_per_layer": {s.name: density[t].tolist() for t, s in enumerate(specs)},
        "search": search_report,
        "routing": model.body.routing_summary(model.task_names),
        "steps": session.step,
        "train_seconds": round(seconds, 2),
    }


def train(config, out_dir: str | Path = "runs", device: str | None = None, folder: str | None = None,
          quiet: bool = False) -> Path | None:
    """Train a run described by `config` into a new directory under `out_dir`; returns its path.

    Under torchrun (WORLD_SIZE > 1) the processes train data-parallel and rank 0 writes the run;
    the others return None."""
    device = resolve_device(device or config.train.device)
    parallel = distributed.from_environment()
    device = distributed.local_device(device)
    data = load_tasks(config.tasks, config.data)
    writer = None
    if parallel is None or parallel.rank == 0:  # under torchrun, rank 0 alone writes the run
        writer = RunWriter(out_dir, config, [d.spec for d in data], str(device), folder)
    return _run(config, data, device, writer, None, quiet, parallel)


def resume(run_path: str | Path, device: str | None = None, quiet: bool = False) -> Path:
    """Continue a killed or interrupted run in its own folder from its last checkpoint.

    Checkpoints come from the final phase; a run stopped before its first one trains again from
    the start (the same seed gives the same search). Either way the final weights equal those of
    an uninterrupted run on the same device."""
    from lsmn_core.store import open_run

    if distributed.from_environment() is not None:
        raise ConfigError("--resume runs in one process; start it without torchrun")
    run = open_run(run_path)
    if run.status not in ("interrupted", "failed"):
        raise RunError(f"run {run.id} is {run.status}; only an interrupted or failed run can be resumed")
    config = run.config()
    device = resolve_device(device or config.train.device)
    state = checkpoint.load(run.path)
    writer = RunWriter.reopen(run.path, keep_steps=state["meta"]["loop"]["session_step"] if state else 0)
    return _run(config, load_tasks(config.tasks, config.data), device, writer, state, quiet)


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # `kill` and job stops end the run as Ctrl-C does: marked interrupted


def _run(config, data: list[TaskData], device: torch.device, writer: RunWriter | None, state: dict | None,
         quiet: bool, parallel: DataParallel | None = None) -> Path | None:
    """Search the routing (unless a checkpoint holds it), train all tasks, write the results.
    `writer` is None in the processes of a torchrun job that do not write (rank > 0)."""
    model = build_model([d.spec for d in data], config).to(device)
    start = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm) if _main_thread() else None
    try:
        session = TrainingSession(model, DeviceTasks(data, device), config, Reporter(writer, quiet or not writer),
                                  parallel=parallel)
        all_tasks = list(range(len(data)))
        report = state["report"] if state else model.body.search_routing(session)
        session.train(all_tasks, config.train.steps, "train",
                      checkpointing=checkpoint.Checkpointing(writer.path, report, state) if writer else None)
        summary = summarize(session, report.get("summary", {}), time.monotonic() - start)
        if writer:
            writer.save_model(model, report.get("arrays"))
            writer.finish(summary)
            checkpoint.remove(writer.path)
    except KeyboardInterrupt:
        if writer:
            writer.set_status("interrupted", "stopped by the user or a signal")
        raise
    except Exception as exc:
        if writer:
            writer.set_status("failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return writer.path if writer else None


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
