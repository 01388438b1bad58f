"""Unsupervised domain adaptation by mixture weights alone, after section 4.4 of "Compositional
Models: Multi-Task Learning and Knowledge Transfer with Modular Networks".

A run trained on labelled source domains (tasks with one data set and target under several input
domains) meets an unlabelled target domain. The target becomes a new task that starts as a source
task (its mixture weights and its head copied), and only its mixture weights train (`train=
"routing"`: layers x templates numbers), so that the body's output on target samples matches its
output on the source samples in moments, as in "Moment Matching for Multi-Source Domain Adaptation"
(M3SDA): for k = 1 .. `moments`, the distance between the k-th elementwise moments of the target's
features and each source's, averaged over the sources. The paper's baseline fine-tunes the input
adapter instead (`train="encoder"`: the encoder the target shares with the sources). M3SDA's second
step, the discrepancy between two classifiers, is not part of this: the head is the source's, fixed.

The target's labels never enter training: the objective reads inputs only, and labels are read
only to evaluate (the summary holds the target's accuracy before and after adaptation).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from lsmn_core.config import TaskConfig
from lsmn_core.errors import ConfigError
from lsmn_core.training.finetune import FinetunePlan, child_config, child_model, count_trainable, train_child
from lsmn_core.network.model import MultitaskNet
from lsmn_core.training.session import Phase
from lsmn_core.store.runs import Run
from lsmn_core.training.trainer import TrainingSession, evaluation_mode

DEV_SAMPLES = 512  # inputs per domain the logged distance is measured on


@dataclass
class AdaptPlan:
    """Adapt to `target_domain` from the run's task `source` (default: its first task), aligning
    to every task with the source's data set and target (the source domains); train the target's
    mixture weights (routing) or the input adapter (encoder) for `steps` steps."""

    target_domain: str
    source: str | None = None
    train: Literal["routing", "encoder"] = "routing"
    steps: int = 500
    moments: int = 2

    def check(self, run: Run) -> TaskConfig:
        """The source task's config; ConfigError for a plan that cannot apply to `run`."""
        if self.train not in ("routing", "encoder"):
            raise ConfigError(f"train must be 'routing' or 'encoder', got {self.train!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError("steps must be a whole number >= 1")
        if isinstance(self.moments, bool) or not isinstance(self.moments, int) or not 1 <= self.moments <= 4:
            raise ConfigError("moments must be 1 .. 4")
        if run.on_checkpoint:
            raise ConfigError(f"run {run.id} is on a checkpoint: adapting to an input domain needs the Studio's own "
                              "network (a shared body with an input adapter or mixture weights)")
        tasks = run.config().tasks
        source = self.source if self.source is not None else tasks[0].name
        chosen = next((t for t in tasks if t.name == source), None)
        if chosen is None:
            raise ConfigError(f"source: no task {source!r} in the run (tasks: {', '.join(t.name for t in tasks)})")
        if chosen not in domain_tasks(run):
            raise ConfigError(f"source {source!r}: only the image tasks of a data set (dataset: ...) have input "
                              "domains to adapt to")
        if any(t.dataset == chosen.dataset and t.domain == self.target_domain for t in tasks):
            raise ConfigError(f"the run already trains on the {self.target_domain!r} domain of {chosen.dataset}; "
                              "adapt to a domain it has not seen")
        if target_task(chosen, self.target_domain).name in run.task_names:
            raise ConfigError(f"the run already has a task {target_task(chosen, self.target_domain).name!r}")
        return chosen


def domain_tasks(run: Run) -> list[TaskConfig]:
    """The run's tasks that take input domains, so that adaptation can make a target domain's task of
    one: those of a registered data set whose inputs are images, in a network of the Studio's own."""
    if run.on_checkpoint:
        return []  # a checkpoint's network has no input adapter or mixture weights to adapt
    images = {spec.name for spec in run.specs if spec.modality == "image"}
    return [task for task in run.config().tasks if task.dataset is not None and task.name in images]


def target_task(source: TaskConfig, domain: str) -> TaskConfig:
    """The target domain's task: the source's data set and target, under `domain`."""
    return TaskConfig(name=f"{source.target}_{domain}", dataset=source.dataset, target=source.target, domain=domain)


def moment_distance(target: torch.Tensor, sources: list[torch.Tensor], moments: int) -> torch.Tensor:
    """M3SDA's moment distance from the target's features [B, F] to each source's, averaged over the
    sources: sum over k of || E[target^k] - E[source^k] ||_2 (elementwise powers)."""
    total = target.new_zeros(())
    for k in range(1, moments + 1):
        own = target.pow(k).mean(0)
        total = total + sum(torch.linalg.vector_norm(own - s.pow(k).mean(0)) for s in sources) / len(sources)
    return total


def adapt(run: Run, plan: AdaptPlan, out_dir: str | Path | None = None, device: str = "auto",
          quiet: bool = True) -> Path:
    """Adapt `run` to an unlabelled target domain as `plan` says, into a new run (under out_dir,
    default: beside the parent) whose last task is the target; returns its path."""
    source = plan.check(run)
    names = run.task_names
    target = target_task(source, plan.target_domain)
    config = child_config(run, [target], plan.steps)
    config.name = f"{run.config().name}-adapt"
    source_ids = [i for i, t in enumerate(config.tasks[:-1])
                  if t.dataset == source.dataset and t.target == source.target]
    target_id = len(names)
    finetune_plan = FinetunePlan(plan.steps, "all", [target], init_from=source.name)  # routing starts as the source's

    def make_model(specs):
        model = child_model(run, finetune_plan, specs, config)
        if not isinstance(model, MultitaskNet):
            raise ConfigError(f"the {run.scheme} scheme builds a network per task; adapt needs one shared body")
        if plan.train == "routing" and not model.body.routing_parameters():
            raise ConfigError(f"the {run.scheme} scheme has no mixture weights to adapt; use train 'encoder'")
        model.heads[target.name].load_state_dict(model.heads[source.name].state_dict())  # the source's classifier
        return model

    def make_trainable(model):
        if plan.train == "routing":
            chosen = {f"body.{n}" for n in model.body.routing_parameters()}
            return lambda name: name in chosen
        prefix = f"encoders.{model.encoder_key(model.specs[target_id])}."
        return lambda name: name.startswith(prefix)

    def work(session: TrainingSession) -> dict:
        model = session.model
        if not isinstance(model, MultitaskNet):
            raise ConfigError(f"the {run.scheme} scheme builds each task's own network; adaptation aligns the "
                              "features of a shared body")
        # the sources' features as the parent computes them: the encoder the target trains is the
        # sources' too, and aligning to features that move with it would let both collapse together
        reference = copy.deepcopy(model).requires_grad_(False)

        def features(net: MultitaskNet, task: int, x: torch.Tensor) -> torch.Tensor:
            return net.representations(x, [task])[0][0].flatten(1)

        def distance(split: str, size: int, generator: torch.Generator | None) -> torch.Tensor:
            inputs = [session.tasks.batch(t, size, generator, split)[0] for t in [target_id, *source_ids]]
            with torch.no_grad():
                aligned_to = [features(reference, t, x) for t, x in zip(source_ids, inputs[1:])]
            return moment_distance(features(model, target_id, inputs[0]), aligned_to, plan.moments)

        steps = []

        def log_distance() -> None:
            """Every eval_every steps, the distance on the dev splits' inputs (the same samples each time)."""
            steps.append(session.step + 1)
            if len(steps) % config.train.eval_every and len(steps) != plan.steps:
                return
            with torch.no_grad(), evaluation_mode(model):
                value = float(distance("dev", DEV_SAMPLES, torch.Generator().manual_seed(0)))
            session.reporter.log([{"step": steps[-1], "phase": "adapt", "task": target.name, "split": "dev",
                                   "metric": "moment distance", "value": value}])

        before = session.evaluate(target_id, "test")[1]
        counts = count_trainable(model, session.trainable, [target_id])
        session.train(Phase("adapt", [target_id], plan.steps, sampling="all", early_stopping=False,
                            after_step=log_distance,
                            loss=lambda _: distance("train", config.train.batch_size, session.generator)))
        return {"adapt": {"parent": run.id, "target": target.name, "target_domain": plan.target_domain,
                          "source": source.name, "aligned_to": [names[i] for i in source_ids],
                          "train": plan.train, "objective": f"moment matching of orders 1..{plan.moments}",
                          "target_test_before": before, **counts}}

    return train_child(run, config, make_model, make_trainable, work, out_dir, device, quiet)
