"""`lsmn vectors`: a task vectors run from the fine-tunes of one checkpoint. Every tensor is read once,
a task's whole tensor at a time for its mask's level and then a chunk of rows of every task at a time,
so memory stays near one tensor per fine-tune whatever their number; the run is written with its
tasks' heads, their masks, the statistics and the `individual` recipe, and every task is evaluated
(the individual fine-tunes, the figure every merge is measured against)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from tqdm import tqdm

from lsmn_core.config import load_config, parse_config
from lsmn_core.data.loading import check_data_fits, load_tasks
from lsmn_core.errors import ConfigError
from lsmn_core.merges.combine import row_chunks
from lsmn_core.merges.matrix import by_singular_vectors
from lsmn_core.merges.ties import magnitude_level, trimmed
from lsmn_core.pretrained import loader_of
from lsmn_core.pretrained.checkpoint import sha256
from lsmn_core.pretrained.network import PretrainedNet, open_source
from lsmn_core.pretrained.text import tokenization
from lsmn_core.schemes.vectors.inputs import TaskVectorSet, VectorInput, has_head, head_files, head_of
from lsmn_core.schemes.vectors.scheme import TaskVectors, layer_labels
from lsmn_core.schemes.vectors.statistics import Interference
from lsmn_core.store.runs import DATA_CACHE, Run, RunWriter, check_runs_folder, open_run
from lsmn_core.training.evaluation import evaluate_run

ADAMERGING = {"steps": 500, "batch_size": 16, "lr": 1e-3, "eval_every": 100, "device": "auto"}  # the paper's


def from_run(run: Run, out_dir: str | Path | None, density: float = 0.1, quiet: bool = False,
             folder: str | None = None, name: str | None = None) -> Path:
    """A run of the task vectors of `run`, a pretrained run with a delta per task (a fine-tune per
    task) or a LoRA adapter per task, named `name` (default: run's name + "-vectors"); beside it
    unless `out_dir` says where, in the folder `folder` if one is named."""
    config = run.config()
    meta = run.meta.get("pretrained")
    if meta is None:
        raise ConfigError(f"run {run.id} is not of a pretrained checkpoint: its tasks have no task vectors")
    out_dir = Path(out_dir or run.path.parent)
    weights = run.path / "model.safetensors"
    digest = sha256(weights)
    adapter = getattr(config.scheme, "adapter", None)
    scaling = adapter.lora.alpha / adapter.lora.rank if adapter is not None else None
    inputs = [VectorInput(task, {str(weights.resolve()): digest}, run=str(run.path.resolve()), index=t,
                          lora_scaling=scaling) for t, task in enumerate(run.task_names)]
    beside = out_dir.resolve() == run.path.parent.resolve()  # recorded from the new run's folder: they move together
    place = f"../{run.path.name}" if beside else str(run.path.resolve())
    recorded = [VectorInput(i.task, {f"{place}/model.safetensors": digest}, run=place, index=i.index,
                            lora_scaling=scaling) for i in inputs]
    data = config.to_dict()
    data.update(name=name or f"{config.name}-vectors", scheme={"kind": "vectors", "density": density,
                                                        "inputs": [i.to_dict() for i in recorded]}, train=ADAMERGING)
    individual = {name: {k: m[k] for k in ("metric", "dev", "test")} for name, m in run.summary()["metrics"].items()}
    return _make(parse_config(data), inputs, out_dir, individual, quiet, folder)


def from_finetunes(base: str, finetunes: list[str], data: str | Path, out_dir: str | Path, names: list[str] | None,
                   density: float = 0.1, module_class: str | None = None, quiet: bool = False,
                   vocab: str = "same") -> Path:
    """A run of the fine-tunes (model folders, or weights files of `module_class`) of the checkpoint
    `base`, task i named names[i] (else its folder's name); `data` is a config whose tasks of those
    names give each task's data (its other keys: how the text is read). Each fine-tune needs its
    head beside it, as `lsmn export --task` writes it, to be evaluated. `vocab` "base": a fine-tune
    whose tokenizer grew gives the vector of the checkpoint's rows, its added rows left out."""
    if len(finetunes) < 2:
        raise ConfigError("give the checkpoint and at least two of its fine-tunes")
    names = names or [Path(f).name for f in finetunes]
    if len(names) != len(finetunes) or len(set(names)) != len(names):
        raise ConfigError(f"--names: {len(names)} distinct names for {len(finetunes)} fine-tunes")
    pretrained = {"class": module_class, "weights": base} if module_class else {"hf": base}
    inputs = []
    for name, finetune in zip(names, finetunes):
        folder = Path(finetune).resolve()
        loader = loader_of({"class": module_class, "weights": str(folder)} if module_class else {"hf": str(folder)})
        files = loader.weight_files()
        heads = folder.parent if module_class else folder
        if not has_head(heads):
            raise ConfigError(f"{finetune}: no task head beside it (lsmn-head.safetensors and lsmn-head.json, as "
                              "`lsmn export --task` writes them): the Studio evaluates the tasks it imports")
        inputs.append(VectorInput(name, {str(f.resolve()): sha256(f) for f in [*files, *head_files(heads)]},
                                  finetune=str(folder)))
    given = load_config(data)
    by_name = {task.name: task for task in given.tasks}
    if missing := [n for n in names if n not in by_name]:
        raise ConfigError(f"--data {data}: no task {missing[0]!r} (it has {', '.join(by_name)[:200]})")
    raw = given.to_dict()
    raw.update(name=f"{Path(base).name}-vectors", tasks=[raw["tasks"][list(by_name).index(n)] for n in names],
               model={**raw["model"], "pretrained": pretrained},
               scheme={"kind": "vectors", "density": density, "everywhere": True, "vocab": vocab,
                       "inputs": [i.to_dict() for i in inputs]}, train=ADAMERGING)
    return _make(parse_config(raw), inputs, out_dir, None, quiet)


def _make(config, inputs: list[VectorInput], out_dir: str | Path, individual: dict | None, quiet: bool,
          folder: str | None = None) -> Path:
    out_dir = check_runs_folder(out_dir)
    _, source = open_source(config, False, TaskVectors)
    source.files = {str(f): sha256(f) for f in loader_of(config.model.pretrained).weight_files()}
    heads = [head_of(item) for item in inputs]
    specs = [dataclasses.replace(spec, name=item.task) for (_, spec), item in zip(heads, inputs)]
    vectors = TaskVectorSet(loader_of(config.model.pretrained).weight_files(), list(source.targets), inputs,
                            vocab=config.scheme.vocab)
    body = TaskVectors(config.scheme, len(specs), source, config)
    model = PretrainedNet(specs, body, None, source, config.model.pool)
    for (state, _), spec in zip(heads, specs):
        model.heads[spec.name].load_state_dict(state)
    if individual is None:  # the fine-tunes are evaluated once the run exists: their data must load first
        check_data_fits(specs, load_tasks(config.tasks, config.data, tokenization(config, out_dir / DATA_CACHE)))
    statistics = Interference(len(specs), layer_labels(source.depth))
    for name in tqdm(source.targets, desc="task vectors", disable=quiet, leave=False):  # every check before a run
        masks = _masks_and_statistics(vectors, name, source.target_layers[name] + 1, config.scheme.density,
                                      statistics)
        body.set_masks(name, masks)
    writer = RunWriter(out_dir, config, specs, "cpu", folder)
    try:
        writer.record_source(model)
        writer.save_model(model)
        metrics = individual or {name: {k: m[k] for k in ("metric", "dev", "test")}
                                 for name, m in evaluate_run(open_run(writer.path)).get("metrics", {}).items()}
        density = body.density()
        writer.finish({"metrics": metrics, "params": model.parameter_counts(),
                       "density": {s.name: density[t].mean().item() for t, s in enumerate(specs)},
                       "density_per_layer": {s.name: density[t].tolist() for t, s in enumerate(specs)},
                       "vectors": {**statistics.report(), **({"added_rows": vectors.added} if vectors.added else {})},
                       "routing": body.routing_summary(model.task_names)})
    except BaseException as exc:
        writer.end(exc)
        raise
    return writer.path


def _masks_and_statistics(vectors: TaskVectorSet, name: str, column: int, density: float,
                          statistics: Interference) -> torch.Tensor:
    """Tensor `name`'s masks [T, ...] (each task's `density` largest deltas), its statistics added."""
    tasks, shape = len(vectors.inputs), vectors.shape(name)
    levels = [magnitude_level(vectors.delta(t, name), density) for t in range(tasks)]
    masks = torch.zeros(tasks, *shape, dtype=torch.bool)
    for rows in row_chunks(shape):
        deltas = vectors.deltas(name, rows if shape else None)
        kept = trimmed(deltas, levels)  # each task's largest deltas, zero elsewhere (a zero delta is not kept)
        masks[:, rows] = kept != 0
        statistics.add(name, column, deltas, kept)
    if by_singular_vectors(name, shape) and min(shape) >= tasks:
        statistics.add_matrix(name, column, vectors.deltas(name))  # the matrix merges' weights, whole
    return masks

