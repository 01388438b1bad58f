"""Training: one loop for every scheme, read top to bottom.

`train()` loads the data, builds the model, lets the scheme search its routing (sparse sharing: IMP
with rewinding), then trains all tasks together, sampling one task per step as the slides "Learning
Sparse Sharing Architectures for Multiple Tasks" do. Evaluation every `eval_every` steps goes to
metrics.jsonl; early stopping keeps the best dev state.
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch
from torch import nn
from tqdm import tqdm

from lsmn_core.training import checkpoint, distributed
from lsmn_core.data.loading import TaskData, load_tasks
from lsmn_core.training.distributed import DataParallel
from lsmn_core.errors import ConfigError, RunError, TrainingError
from lsmn_core.network.model import MultitaskModel
from lsmn_core.schemes import build_model, check_model_size
from lsmn_core.training.session import Phase, SearchReport
from lsmn_core.pretrained.network import check_source
from lsmn_core.pretrained.text import tokenization
from lsmn_core.store.runs import DATA_CACHE, RunWriter, check_runs_folder, open_run
from lsmn_core.data.streaming import LoaderOptions, StreamedSplit, TensorSplit, is_dataset
from lsmn_core.data.tasks import TaskSpec, metric_value, score, task_loss


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for, but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


class DeviceTasks:
    """Every task's splits: array tasks as tensors on the training device, loaded once; streamed
    tasks read in batches from their Datasets (lsmn_core.data.streaming)."""

    def __init__(self, data: list[TaskData], device: torch.device, config=None):
        self.device = device
        self.specs = [d.spec for d in data]
        options = LoaderOptions(config.data.workers, config.data.pin_memory) if config else LoaderOptions()
        seed = config.seed if config else 0
        self.splits: list[dict[str, StreamedSplit | TensorSplit]] = []
        for t, d in enumerate(data):
            checks = {"input_shape": d.spec.input_shape,
                      "classes": d.spec.n_outputs if d.spec.kind == "classification" else 0}
            self.splits.append({k: StreamedSplit(split, d.spec.name, device, options, seed * 1_000_003 + 3 * t + i,
                                                 checks)
                                if is_dataset(split) else TensorSplit(split[0], split[1], device)
                                for i, (k, split) in enumerate(d.splits.items())})

    def batch(self, task: int, size: int, generator: torch.Generator | None, split: str = "train"):
        return self.splits[task][split].batch(size, generator)

    def stream_positions(self) -> dict[str, int]:
        """How many batches each streamed split has handed out ("task/split": count), for checkpoints."""
        return {f"{t}/{k}": s.drawn for t, splits in enumerate(self.splits) for k, s in splits.items()
                if isinstance(s, StreamedSplit)}

    def seek(self, positions: dict[str, int]) -> None:
        for key, drawn in positions.items():
            task, split = key.split("/")
            stream = self.splits[int(task)][split]
            if isinstance(stream, StreamedSplit):
                stream.seek(drawn)


@contextlib.contextmanager
def evaluation_mode(model: nn.Module):
    """Eval mode for a block of evaluations: switching the mode walks every module (a model of 1,000
    tasks' heads has thousands), so many tasks' evaluations switch once."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


@torch.no_grad()
def evaluate_task(model: MultitaskModel, tasks: DeviceTasks, task: int, split: str,
                  chunk: int = 2048) -> tuple[float, float]:
    """(loss, metric) of one task on one split, in eval mode."""
    spec = tasks.specs[task]
    with evaluation_mode(model):
        chunks = [(model(x, task), y) for x, y in tasks.splits[task][split].in_order(chunk)]
    outputs, targets = torch.cat([o for o, _ in chunks]), torch.cat([y for _, y in chunks])
    return task_loss(spec, outputs, targets).item(), metric_value(spec, outputs, targets)


class TaskSampler:
    """Which tasks train next: one, proportional to training-set size or round-robin, or all."""

    def __init__(self, tasks: DeviceTasks, task_ids: list[int], mode: str, generator: torch.Generator):
        self.task_ids, self.mode, self.generator, self.i = task_ids, mode, generator, 0
        sizes = torch.tensor([tasks.specs[t].sizes["train"] for t in task_ids], dtype=torch.float)
        self.weights = sizes / sizes.sum()

    def next_tasks(self) -> list[int]:
        if self.mode == "all":
            return self.task_ids
        if self.mode == "round_robin":
            self.i += 1
            return [self.task_ids[(self.i - 1) % len(self.task_ids)]]
        return [self.task_ids[int(torch.multinomial(self.weights, 1, generator=self.generator))]]


class EarlyStopping:
    """The best dev score of a phase and the state that reached it; says stop after `patience`
    evaluations without a gain (0: never)."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best_score, self.evals_since_best = -math.inf, 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def observe(self, score: float, model: nn.Module) -> bool:
        """Record an evaluation's score; True when the phase should stop."""
        if score > self.best_score:
            self.best_score, self.evals_since_best = score, 0
            self.best_state = copy.deepcopy(model.state_dict())
            return False
        self.evals_since_best += 1
        return bool(self.patience) and self.evals_since_best >= self.patience

    def restore_best(self, model: MultitaskModel) -> None:
        if self.best_state is not None:
            model.load_weights(self.best_state)


class DivergenceWatch:
    """The first step whose loss was not finite, noted on the device so that no step waits for it;
    read at evaluations and at a phase's end, where it raises TrainingError."""

    def __init__(self, device: torch.device):
        self.first_bad = torch.tensor(math.inf, device=device)

    def note(self, loss: torch.Tensor, step: int) -> None:
        self.first_bad = torch.where(torch.isfinite(loss.detach()), self.first_bad, self.first_bad.clamp(max=step))

    def check(self, phase: str) -> None:
        step = self.first_bad.item()
        if math.isfinite(step):
            raise TrainingError(f"the loss became nan or infinite at step {int(step)} of phase {phase}; "
                                "try a lower train.lr")


class Reporter:
    """Progress to the terminal (a bar on stderr) and to the run directory (progress.json, metrics),
    and the curves to TensorBoard event files under `tensorboard/<run id>` when a folder is given."""

    def __init__(self, writer: RunWriter | None, quiet: bool = False, tensorboard: str | None = None):
        self.writer, self.quiet = writer, quiet
        self.board = None
        if writer and tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported only by runs that ask for it

            folder = Path(tensorboard).expanduser() / writer.path.name
            try:
                self.board = SummaryWriter(log_dir=str(folder))
            except OSError as exc:
                raise ConfigError(f"train.tensorboard: cannot write to {folder}: {exc.strerror or exc}") from None

    def bar(self, total: int, phase: str):
        return tqdm(total=total, desc=phase, file=sys.stderr, leave=False, disable=self.quiet,
                    dynamic_ncols=True)

    def progress(self, phase: str, step: int, total: int, message: str = "", force: bool = False):
        if self.writer:
            self.writer.progress(phase, step, total, message, force)

    def log(self, records: list[dict]):
        if self.writer:
            self.writer.log(records)
        if self.board:  # tags phase/task/split/<metric>, and /loss and /density where a record has them
            for r in records:
                prefix = f"{r['phase']}/{r['task']}/{r['split']}"
                self.board.add_scalar(f"{prefix}/{r['metric']}", r["value"], r["step"])
                for extra in ("loss", "density"):
                    if extra in r:
                        self.board.add_scalar(f"{prefix}/{extra}", r[extra], r["step"])
            self.board.flush()

    def close(self) -> None:
        if self.board:
            self.board.close()


class BatchLoss(nn.Module):
    """The summed loss of one batch per task (each weighted), plus each task's penalty and each
    forward's auxiliary loss once; same-shaped batches go through the model together. A module, so
    that DistributedDataParallel can wrap it."""

    def __init__(self, model: MultitaskModel, specs: list[TaskSpec]):
        super().__init__()
        self.model, self.specs = model, specs

    def forward(self, step_tasks: list[int], batches: list[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
        xs = [x for x, _, _ in batches]
        body = self.model.body
        auxiliary: torch.Tensor | float
        if len(xs) > 1 and all(x.shape == xs[0].shape for x in xs):
            outputs = self.model.forward_tasks(torch.stack(xs), list(step_tasks))
            auxiliary = body.auxiliary_loss()
        else:
            outputs, auxiliary = [], 0.0
            for x, t in zip(xs, step_tasks):
                outputs.append(self.model(x, t))
                auxiliary = auxiliary + body.auxiliary_loss()
        losses = [weight * task_loss(self.specs[t], out, y) + body.penalty(t)
                  for t, out, (_, y, weight) in zip(step_tasks, outputs, batches)]
        return cast(torch.Tensor, sum(losses)) + auxiliary


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
        self.body_params = model.scheme_parameters()

    def fork(self, model: MultitaskModel, alone: bool = False) -> TrainingSession:
        """A session over `model` (private copies of this one's) with this one's data, config,
        reporter, data-parallel share (none when `alone`) and step."""
        forked = TrainingSession(model, self.tasks, self.config, self.reporter,
                                 parallel=None if alone else self.parallel)
        forked.step = self.step
        return forked

    def evaluate(self, task: int, split: str) -> tuple[float, float]:
        return evaluate_task(self.model, self.tasks, task, split)

    def evaluate_each(self, task_ids: list[int], split: str) -> list[tuple[float, float]]:
        """(loss, metric) of each task, the model switched to eval mode once."""
        with evaluation_mode(self.model):
            return [self.evaluate(t, split) for t in task_ids]

    def evaluate_tasks(self, task_ids: list[int], split: str, phase: str) -> float:
        """Evaluate, log the records, and return the mean 'higher is better' score."""
        records, scores = [], []
        for t, (loss, value) in zip(task_ids, self.evaluate_each(task_ids, split)):
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

    def train(self, phase: Phase) -> int:
        """Train phase.tasks for up to phase.steps steps, as lsmn_core.training.session.Phase describes;
        returns the last step. Only the parameters the session's `trainable` picks are trained."""
        cfg = self.config.train
        sampler = TaskSampler(self.tasks, phase.tasks, phase.sampling or cfg.sampling, self.generator)
        watch, stopping = DivergenceWatch(self.tasks.device), EarlyStopping(cfg.patience)
        self.model.train()
        with self._optimizer() as optimizer, self.reporter.bar(phase.steps, phase.name) as bar:
            # wrapped once the frozen parameters are frozen: DDP buckets only those that train
            loss_of = self.parallel.wrap(self.batch_loss, self.tasks.device) if self.parallel else self.batch_loss
            step = first = phase.checkpointing.resume(self, optimizer, stopping) if phase.checkpointing else 0
            bar.update(first)
            for step in range(first + 1, phase.steps + 1):
                step_tasks = sampler.next_tasks()
                loss = phase.loss(step_tasks) if phase.loss else self._loss(loss_of, step_tasks)
                watch.note(loss, step)
                self._update(optimizer, loss, step_tasks)
                if phase.after_step:
                    phase.after_step()
                self.step += 1
                bar.update()
                self.reporter.progress(phase.name, step, phase.steps)
                if phase.early_stopping and (step % cfg.eval_every == 0 or step == phase.steps):
                    watch.check(phase.name)  # before a NaN weight is evaluated, kept or saved
                    current = self.evaluate_tasks(phase.tasks, "dev", phase.name)
                    bar.set_postfix(dev=f"{current:.3f}")
                    if stopping.observe(current, self.model):
                        break
                    if phase.checkpointing:
                        phase.checkpointing.save(self, optimizer, step, stopping)
            watch.check(phase.name)
        stopping.restore_best(self.model)
        self.reporter.progress(phase.name, step, phase.steps, "done", force=True)
        return step

    @contextlib.contextmanager
    def _optimizer(self):
        """Fused AdamW (one kernel per parameter group: 3x faster than a loop over tensors, on a CPU
        too), one group per learning-rate scale, over the parameters the session trains; the others
        are frozen until the phase ends."""
        chosen = {n: p for n, p in self.model.named_parameters()
                  if p.requires_grad and (self.trainable is None or self.trainable(n))}
        frozen = [p for n, p in self.model.named_parameters() if p.requires_grad and n not in chosen]
        scales = {f"body.{n}": s for n, s in self.model.body.lr_scales().items()}
        by_scale: dict[float, list[torch.Tensor]] = {}
        for n, p in chosen.items():
            by_scale.setdefault(scales.get(n, 1.0), []).append(p)
        cfg = self.config.train
        groups = [{"params": params, "lr": cfg.lr * scale} for scale, params in by_scale.items()]
        for p in frozen:
            p.requires_grad_(False)
        try:
            yield torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def _loss(self, loss_of: Callable, step_tasks: list[int]) -> torch.Tensor:
        """One step's loss; under torchrun, on this process's share of every task's batch."""
        batches = self.draw(step_tasks)
        shares = [self.parallel.shard(b) for b in batches] if self.parallel else [(x, y, 1.0) for x, y in batches]
        with self.autocast():
            return loss_of(step_tasks, shares)

    def _update(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, step_tasks: list[int]) -> None:
        """One optimiser step, with the body's update confined to the step's tasks' update masks."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        restrict = self.update_masks(step_tasks)
        before = {n: self.body_params[n].detach().clone() for n in restrict}
        optimizer.step()
        with torch.no_grad():
            for n, keep in restrict.items():
                self.body_params[n].copy_(torch.where(keep, self.body_params[n], before[n]))


def summarize(session: TrainingSession, search_summary: dict, seconds: float) -> dict:
    """Final per-task metrics, parameter counts and densities, for summary.json."""
    model, specs = session.model, session.tasks.specs
    model.body.reset_statistics()
    metrics: dict[str, dict[str, str | float]] = {spec.name: {"metric": spec.metric} for spec in specs}
    for split in ("dev", "test"):
        for spec, (_, value) in zip(specs, session.evaluate_each(list(range(len(specs))), split)):
            metrics[spec.name][split] = value
    density = model.body.density()
    return {
        "metrics": metrics,
        "params": model.parameter_counts(),
        "density": {s.name: density[t].mean().item() for t, s in enumerate(specs)},
        "density_per_layer": {s.name: density[t].tolist() for t, s in enumerate(specs)},
        "search": search_summary,
        "routing": model.body.routing_summary(model.task_names),
        "steps": session.step,
        "train_seconds": round(seconds, 2),
    }


def train(config, out_dir: str | Path = "runs", device: str | None = None, folder: str | None = None,
          quiet: bool = False) -> Path | None:
    """Train a run described by `config` into a new directory under `out_dir`; returns its path.

    Under torchrun (WORLD_SIZE > 1) the processes train data-parallel and rank 0 writes the run;
    the others return None."""
    check_runs_folder(out_dir)
    parallel = distributed.from_environment()
    where = distributed.local_device(resolve_device(device or config.train.device))
    data = load_tasks(config.tasks, config.data, tokenization(config, Path(out_dir) / DATA_CACHE))
    # weights, gradients and Adam's two moments, in float32: refused before a folder or a tensor exists
    check_model_size([d.spec for d in data], config, 16, "train")
    if config.model.pretrained is not None:
        check_source(config)
    writer = None
    if parallel is None or parallel.rank == 0:  # under torchrun, rank 0 alone writes the run
        writer = RunWriter(Path(out_dir), config, [d.spec for d in data], str(where), folder)
    return _run(config, data, where, writer, None, quiet, parallel)


def resume(run_path: str | Path, device: str | None = None, quiet: bool = False) -> Path:
    """Continue a killed or interrupted run in its own folder from its last checkpoint.

    Checkpoints come from the final phase; a run stopped before its first one trains again from
    the start (the same seed gives the same search). Either way the final weights equal those of
    an uninterrupted run on the same device."""
    if distributed.from_environment() is not None:
        raise ConfigError("--resume runs in one process; start it without torchrun")
    run = open_run(run_path)
    if run.status not in ("interrupted", "failed"):
        raise RunError(f"run {run.id} is {run.status}; only an interrupted or failed run can be resumed")
    config = run.config()
    where = resolve_device(device or config.train.device)
    state = checkpoint.load(run.path)
    writer = RunWriter.reopen(run.path, keep_steps=state["meta"]["loop"]["session_step"] if state else 0)
    data = load_tasks(config.tasks, config.data, tokenization(config, run.path.parent / DATA_CACHE))
    _run(config, data, where, writer, state, quiet)
    return writer.path


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # `kill` and job stops end the run as Ctrl-C does: marked interrupted


def _run(config, data: list[TaskData], device: torch.device, writer: RunWriter | None, state: dict | None,
         quiet: bool, parallel: DataParallel | None = None) -> Path | None:
    """Search the routing (unless a checkpoint holds it), train all tasks, write the results.
    `writer` is None in the processes of a torchrun job that do not write (rank > 0)."""
    start = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm) if _main_thread() else None
    reporter = None
    try:
        model = build_model([d.spec for d in data], config, writer.meta.get("pretrained") if writer else None)
        model = model.to(device)
        if writer:
            writer.record_source(model)
        reporter = Reporter(writer, quiet or not writer, config.train.tensorboard)
        session = TrainingSession(model, DeviceTasks(data, device, config), config, reporter, parallel=parallel)
        report: SearchReport = state["report"] if state else model.body.search_routing(session)
        session.train(Phase("train", list(range(len(data))), config.train.steps,
                            checkpointing=checkpoint.Checkpointing(writer.path, report, state) if writer else None))
        summary = summarize(session, report.summary, time.monotonic() - start)
        if writer:
            writer.save_model(model, report.arrays)
            writer.finish(summary)
            checkpoint.remove(writer.path)
    except (KeyboardInterrupt, Exception) as exc:  # a stop or a failure: end() records which
        if writer:
            writer.end(exc)
        raise
    finally:
        if reporter:
            reporter.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return writer.path if writer else None


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
