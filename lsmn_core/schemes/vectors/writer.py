"""`lsmn merge`: a task vectors run's merge written in its checkpoint's own format, streamed: each
tensor is merged a chunk of rows at a time and appended to the safetensors file as it comes, so the
merge holds one tensor of the checkpoint and a chunk of every fine-tune, never the merged network.
A Hugging Face checkpoint gives a folder that transformers loads without the Studio (its config and
tokenizer copied beside the merged weights); a user's module gives its weights file. The tasks'
heads (never merged) and the recipe go beside, in lsmn-heads.safetensors and lsmn-merge.json."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lsmn_core.errors import ConfigError, RunError
from lsmn_core.merges import MERGES
from lsmn_core.merges.combine import merge_tensor, weighted
from lsmn_core.merges.matrix import MatrixMerge
from lsmn_core.merges.method import Compression, Recipe
from lsmn_core.pretrained import loader_of
from lsmn_core.pretrained.huggingface import HuggingFace
from lsmn_core.schemes.vectors.inputs import TaskVectorSet, VectorInput
from lsmn_core.schemes.vectors.scheme import INDIVIDUAL, TaskVectors, recipe_document
from lsmn_core.schemes.vectors.tensors import DTYPES
from lsmn_core.store.files import new_folder, occupied
from lsmn_core.store.runs import Run

SAFETENSORS_DTYPES = {dtype: name for name, dtype in DTYPES.items()}
WEIGHTS_PATTERNS = ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
                    "pytorch_model.bin.index.json", "lsmn-*")


class StreamedSafetensors:
    """A safetensors file written tensor by tensor, chunk by chunk, in the order of its header."""

    def __init__(self, path: Path, entries: list[tuple[str, torch.dtype, tuple[int, ...]]]):
        header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for key, dtype, shape in entries:
            size = torch.empty((), dtype=dtype).element_size() * int(torch.Size(shape).numel())
            header[key] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape),
                           "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        self.file = open(path, "wb")
        self.file.write(len(text).to_bytes(8, "little") + text)

    def write(self, tensor: torch.Tensor) -> None:
        self.file.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())

    def close(self) -> None:
        self.file.close()


def check_out(out: Path, run: Run, inputs: list[VectorInput]) -> None:
    """A new folder, outside the run and every input (none is ever written into or replaced)."""
    if occupied(out):
        raise ConfigError(f"--out {out}: exists; give a new folder (an existing one is never replaced)")
    resolved = out.resolve()
    for place in [run.path, *(Path(i.run or i.finetune or "") for i in inputs)]:
        place = place.resolve()
        if resolved == place or place in resolved.parents:
            raise ConfigError(f"--out {out}: inside {place}, which the merge reads; give a folder elsewhere")


def write_merge(run: Run, recipe: Recipe, out: str | Path, task: str | None = None, progress=None) -> Path:
    """The merge `recipe` of `run` into the new folder `out` (for a per-task method, task `task`'s
    network); returns the folder. `progress(stage, done, total)` hears of each tensor written."""
    out = Path(out)
    body = vectors_body(run)
    inputs = body.inputs
    check_out(out, run, inputs)
    if recipe.method == INDIVIDUAL:
        raise ConfigError("--method: give a merge method (individual fine-tunes are the run's inputs)")
    method = MERGES.get(recipe.method, "--method")()
    check_task(run, recipe, task)
    index = run.task_names.index(task) if method.per_task and task is not None else 0
    loader = loader_of(run.config().model.pretrained)
    files = loader.weight_files()
    for item in inputs:
        item.verify()
    vectors = TaskVectorSet(files, list(body.targets), inputs, vocab=body.options.vocab)
    coefficients = recipe.table(len(inputs), body.columns)
    with new_folder(out) as partial:
        weights = partial / ("model.safetensors" if isinstance(loader, HuggingFace) else "weights.safetensors")
        stored = write_stored(vectors, recipe, run.task_names, partial / STORED, progress)
        stream_merge(vectors, recipe, coefficients, body.target_layers, weights, index, progress,
                     partial / STORED if stored else None)
        if isinstance(loader, HuggingFace):
            for file in sorted(loader.folder.iterdir()):
                if file.is_file() and not any(file.match(p) for p in WEIGHTS_PATTERNS):
                    shutil.copy2(file, partial / file.name)
        save_file(run_heads(run), str(partial / "lsmn-heads.safetensors"))
        (partial / "lsmn-merge.json").write_text(json.dumps({
            "run": run.id, "tasks": run.task_names, "task": task if method.per_task else None,
            "recipe": recipe_document(recipe) | {"coefficients": coefficients.tolist()},
            "source": str(loader.source()), **({"stored": stored} if stored else {})}, indent=1))
    return out


STORED = "lsmn-compressed.safetensors"  # a compression's numbers, every task's


def write_stored(vectors: TaskVectorSet, recipe: Recipe, tasks: list[str], path: Path,
                 progress=None) -> dict | None:
    """A compressing method's numbers of every task (`{task}/{tensor}/{part}`) into `path`, from which
    each task's delta is rebuilt exactly, written tensor by tensor as they are computed (a matrix's
    from all its task vectors at once, any other tensor's from one task's at a time); with the share
    of the task vectors' numbers they are. None (nothing written) for a merge, which stores none."""
    method = MERGES.get(recipe.method)()
    if not isinstance(method, Compression):
        return None
    shapes = {name: method.stored_shapes(name, vectors.shape(name), len(tasks), recipe) for name in vectors.names}
    stream = StreamedSafetensors(path, [(f"{task}/{name}/{part}", torch.float32, shape) for name in vectors.names
                                        for task in tasks for part, shape in shapes[name].items()])

    def numbers_of(name: str) -> Iterator[dict[str, torch.Tensor]]:
        """Every task's numbers of tensor `name`, in the tasks' order."""
        if isinstance(method, MatrixMerge) and method.whole(name, vectors.shape(name), recipe):
            yield from method.stored(name, vectors.chunk_deltas(name)(slice(None)).float(), recipe)
        else:
            for t in range(len(tasks)):
                yield from method.stored(name, vectors.task_delta(name)(t).unsqueeze(0), recipe)

    try:
        for step, name in enumerate(vectors.names):
            for numbers in numbers_of(name):
                for part in shapes[name]:
                    stream.write(numbers[part].float())
            if progress:
                progress("each task's numbers", step + 1, len(vectors.names))
    finally:
        stream.close()
    stored = sum(math.prod(shape) for name in vectors.names for shape in shapes[name].values()) * len(tasks)
    whole = sum(math.prod(vectors.shape(name)) for name in vectors.names) * len(tasks)
    return {"file": path.name, "share": stored / whole, "numbers_per_task": stored // len(tasks)}


def check_task(run: Run, recipe: Recipe, task: str | None) -> None:
    """A per-task method (TALL, TSV-C) writes one task's network: `task` must name one."""
    if MERGES.get(recipe.method, "--method").per_task and task not in run.task_names:
        raise ConfigError(f"--task: the {recipe.method} merge gives each task its own network; name one of "
                          f"{', '.join(run.task_names)[:200]}")


def vectors_body(run: Run) -> TaskVectors:
    """A task vectors run's network body (RunError for a run of another scheme)."""
    body = run.skeleton().body
    if not isinstance(body, TaskVectors):
        raise RunError(f"run {run.id} is not a task vectors run (lsmn vectors makes them); its scheme is {run.scheme}")
    return body


def stream_merge(vectors: TaskVectorSet, recipe: Recipe, coefficients: torch.Tensor, layers: dict[str, int],
                 path: Path, index: int = 0, progress=None, compressed: Path | None = None) -> None:
    """Every tensor of the checkpoint's files into the safetensors file `path`, in their order: where
    the task vectors are, the checkpoint's plus the merge (task `index`'s, for a per-task method) by
    `coefficients` [tasks, columns] at each tensor's layer `layers[name]` (+1 for the column); as
    it is elsewhere. A compression's task network takes its part rebuilt from the numbers
    write_stored wrote to `compressed`. A tensor tied to another (vectors.tied) is merged once and
    written as both. `progress(stage, done, total)` hears of each tensor written."""
    method, base = MERGES.get(recipe.method, "--method")(), vectors.base
    target_of = {key: name for name, key in vectors.base_keys.items()}
    stream = StreamedSafetensors(path, [(k, base.dtype(k), base.shape(k)) for k in base.keys])
    compression = method if isinstance(method, Compression) and compressed is not None else None
    numbers = safe_open(str(compressed), "pt") if compression is not None else None

    def merged(name: str, dtype: torch.dtype):
        """Tensor `name` merged, a chunk of rows at a time."""
        shape, column = vectors.shape(name), coefficients[:, layers[name] + 1]
        if compression is not None and numbers is not None:
            own = compression.from_stored({
                part: numbers.get_tensor(f"{vectors.inputs[index].task}/{name}/{part}")
                for part in compression.stored_shapes(name, shape, len(vectors.inputs), recipe)})
            chunk = weighted(own.unsqueeze(0), None, column[index:index + 1], recipe.lam, True)[0]
            yield (vectors.pretrained(name) + chunk).to(dtype)
            return
        for rows, parts, masks in merge_tensor(method, recipe, name, shape, vectors.task_delta(name),
                                               vectors.chunk_deltas(name), len(vectors.inputs)):
            chunk = weighted(parts, masks, column, recipe.lam, method.own_parts)
            yield (vectors.pretrained(name, rows if shape else None) + chunk[index if len(chunk) > 1 else 0]).to(dtype)

    tied: dict[str, torch.Tensor] = {}  # the merge of a tensor that is written twice
    try:
        for step, key in enumerate(base.keys):
            name = target_of.get(key) or vectors.tied.get(key)
            if name is None:
                stream.write(base.read(key))
            elif name in vectors.tied.values():
                if name not in tied:
                    tied[name] = torch.cat(list(merged(name, base.dtype(key))))
                stream.write(tied[name])
            else:
                for chunk in merged(name, base.dtype(key)):
                    stream.write(chunk)
            if progress:
                progress("the network", step + 1, len(base.keys))
    finally:
        stream.close()


def run_heads(run: Run) -> dict[str, torch.Tensor]:
    """The tasks' heads, as the run stores them (heads.<task>.*)."""
    from safetensors.torch import load_file

    try:
        return {k: v for k, v in load_file(str(run.path / "model.safetensors")).items() if k.startswith("heads.")}
    except OSError as exc:
        raise RunError(f"run {run.id}: cannot read its heads ({exc})") from None
