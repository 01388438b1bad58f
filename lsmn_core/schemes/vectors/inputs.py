"""Where a task vectors run's vectors come from, and reading them. Each task's vector is read from
its input when it is needed, a tensor (or a chunk of its rows) at a time, and never stored in the
run: either a Studio run with a delta per task of its checkpoint's targets (its model.safetensors,
`body.deltas.<name>` [tasks, ...]; the task's row), or with a LoRA adapter per task (the task's
rows of `body.lora_A.<name>` and `body.lora_B.<name>`, its vector (alpha / rank) B A), or a
fine-tune (a model folder or a weights file) whose weights minus the checkpoint's are the vector.
The run records every file's sha256, and a file that is gone or changed is named in one line."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lsmn_core.data.tasks import TaskSpec
from lsmn_core.errors import ConfigError, RunError
from lsmn_core.pretrained.checkpoint import MissingSourceError, sha256
from lsmn_core.schemes.vectors.tensors import TensorFiles, name_map
from lsmn_core.store.files import json_integer, read_json

HEAD_WEIGHTS, HEAD_RECORD = "lsmn-head.safetensors", "lsmn-head.json"  # what `lsmn export --task` writes beside


@dataclass
class VectorInput:
    """One task's vector as the run records it: its files (path -> sha256), and either the run it is
    a row of (`run`, `index`; `lora_scaling`: alpha / rank where the row is a LoRA adapter) or the
    fine-tune it is the difference of (`finetune`)."""

    task: str
    files: dict[str, str]
    run: str | None = None
    index: int | None = None
    finetune: str | None = None
    lora_scaling: float | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data, where: str) -> VectorInput:
        try:
            made = cls(**data) if isinstance(data, dict) else None
        except TypeError:
            made = None
        if made is None or not (isinstance(made.task, str) and isinstance(made.files, dict)
                                and all(isinstance(k, str) and isinstance(v, str) for k, v in made.files.items())
                                and (made.run is None) != (made.finetune is None)
                                and (made.run is None or (isinstance(made.run, str) and json_integer(made.index)))
                                and (made.finetune is None or isinstance(made.finetune, str))
                                and (made.lora_scaling is None or made.run is not None and isinstance(
                                    made.lora_scaling, (int, float)) and 0 < made.lora_scaling < 1e6)):
            raise ConfigError(f"{where}: not a task vector's record (task, files, and run with index or finetune)")
        return made

    def check_present(self) -> None:
        """Each file is where the run recorded it (MissingSourceError naming it), not yet read."""
        for path in self.files:
            if not Path(path).is_file():
                made = f"{path} is gone"
                if self.run:
                    made = (f"the run of fine-tunes {Path(self.run).name} it was imported from is gone (train this "
                            "run's config with a fine-tune per task, then lsmn vectors that run)")
                raise MissingSourceError(f"task {self.task}'s vector: {made}")

    def verify(self) -> None:
        """Each file is where the run recorded it, byte for byte (MissingSourceError naming it)."""
        self.check_present()
        for path, digest in self.files.items():
            if sha256(Path(path)) != digest:
                raise MissingSourceError(f"task {self.task}'s vector: {path} is not the file it was imported from "
                                         "(sha256 differs)")


class TaskVectorSet:
    """The task vectors of `inputs` over the checkpoint's tensors `names` (its parameter names), read
    from the checkpoint's weights files `base` and the inputs' files; `key(name)` is how a Studio run
    names a target's delta."""

    def __init__(self, base: list[Path], names: list[str], inputs: list[VectorInput], key=None, vocab: str = "same"):
        self.names, self.inputs, self.key = names, inputs, key or (lambda name: name.replace(".", "__"))
        self.vocab = vocab  # "base": a fine-tune's added rows (a grown vocabulary) are left out
        self.added: dict[str, dict[str, int]] = {}  # task -> tensor -> rows it added, left out
        self.base = TensorFiles(base, "the checkpoint")
        self._last: tuple[tuple, torch.Tensor] | None = None
        self.base_keys, _ = name_map(self.base, names, "the checkpoint")
        self.tied = tied_copies(self.base, self.base_keys)
        self.readers: list[TensorFiles] = []
        self.keys: list[dict[str, str] | None] = []
        for item in inputs:
            where = f"task {item.task}'s vector ({item.run or item.finetune})"
            reader = TensorFiles([Path(f) for f in item.files if Path(f).name not in (HEAD_WEIGHTS, HEAD_RECORD)],
                                 where)
            if item.run is not None:
                self._check_rows(reader, item, where)
                self.keys.append(None)
            else:
                keys = name_map(reader, names, where)[0]
                self._check_shapes(reader, keys, where, item.task)
                self.keys.append(keys)
            self.readers.append(reader)

    def _check_rows(self, reader: TensorFiles, item: VectorInput, where: str) -> None:
        for name in self.names:
            keys = self._row_keys(item, name)
            if not all(key in reader.keys for key in keys):
                raise ConfigError(f"{where}: holds no {'LoRA adapter' if item.lora_scaling else 'delta'} of "
                                  f"{name!r}: a run with a fine-tune or adapter per task of the same checkpoint's "
                                  "targets is needed")
            shapes, base = [reader.shape(key) for key in keys], self.base.shape(self.base_keys[name])
            if item.lora_scaling is None:
                fits = shapes[0][1:] == base
            else:  # A [T, rank, in, ...], B [T, out, rank, 1, ...]
                (_, rank, *inputs), (_, out, rank_b, *_) = shapes
                fits = rank == rank_b and (out, *inputs) == base
            if not fits or item.index is None or not all(0 <= item.index < s[0] for s in shapes):
                raise ConfigError(f"{where}: its {' and '.join(map(str, map(list, shapes)))} of {name!r} are not one "
                                  f"row per task of the checkpoint's {list(base)}")

    def _row_keys(self, item: VectorInput, name: str) -> list[str]:
        """Where a run's row keeps tensor `name`'s vector: its delta, or its LoRA adapter's A and B."""
        if item.lora_scaling is None:
            return [f"body.deltas.{self.key(name)}"]
        return [f"body.lora_A.{self.key(name)}", f"body.lora_B.{self.key(name)}"]

    def _check_shapes(self, reader: TensorFiles, keys: dict[str, str], where: str, task: str) -> None:
        for name in self.names:
            mine, base = (reader.shape(keys[name]), reader.dtype(keys[name])), \
                (self.base.shape(self.base_keys[name]), self.base.dtype(self.base_keys[name]))
            grown = mine[1] == base[1] and len(mine[0]) == len(base[0]) >= 1 and mine[0][1:] == base[0][1:] \
                and mine[0][0] > base[0][0]
            if grown and self.vocab == "base":
                self.added.setdefault(task, {})[name] = mine[0][0] - base[0][0]
                continue
            if grown:
                raise ConfigError(f"{where}: {name!r} is {list(mine[0])}, the checkpoint's {list(base[0])}: its "
                                  f"tokenizer grew by {mine[0][0] - base[0][0]} tokens; give --vocab base to merge "
                                  "the checkpoint's rows and leave the added ones out")
            if mine != base:
                raise ConfigError(f"{where}: {name!r} is {list(mine[0])} {str(mine[1]).removeprefix('torch.')}, the "
                                  f"checkpoint's is {list(base[0])} {str(base[1]).removeprefix('torch.')}: a fine-tune "
                                  "of another checkpoint")

    def shape(self, name: str) -> tuple[int, ...]:
        return self.base.shape(self.base_keys[name])

    def dtype(self, name: str) -> torch.dtype:
        return self.base.dtype(self.base_keys[name])

    def pretrained(self, name: str, rows: slice | None = None) -> torch.Tensor:
        """The checkpoint's tensor `name` (its `rows`) in float32; the last one read is kept, since every
        fine-tune's vector of it is taken against it."""
        key = (name, None if rows is None else (rows.start, rows.stop))
        if self._last is None or self._last[0] != key:
            self._last = key, self.base.read(self.base_keys[name], rows).float()
        return self._last[1]

    def delta(self, task: int, name: str, rows: slice | None = None) -> torch.Tensor:
        """Task `task`'s vector of tensor `name` (its `rows`), in float32."""
        read, fine_tune = self._read(task, name, rows)
        return read - self.pretrained(name, rows) if fine_tune else read

    def _read(self, task: int, name: str, rows: slice | None) -> tuple[torch.Tensor, bool]:
        """What task `task`'s vector of `name` (its `rows`) comes from, in float32: its fine-tune's
        weights (True: the checkpoint's are still to be taken off), or the vector itself."""
        reader, keys, item = self.readers[task], self.keys[task], self.inputs[task]
        if keys is None and item.lora_scaling is not None:  # (alpha / rank) B A, of B's rows `rows`
            a_key, b_key = self._row_keys(item, name)
            a, b = reader.read(a_key, index=item.index).float(), reader.read(b_key, rows, index=item.index).float()
            return (b.flatten(1) @ a.flatten(1)).view(len(b), *a.shape[1:]) * item.lora_scaling, False
        if keys is None:
            return reader.read(f"body.deltas.{self.key(name)}", rows, index=item.index).float(), False
        if name in self.added.get(item.task, {}):  # the checkpoint's rows only
            rows = slice(*(rows or slice(None)).indices(self.shape(name)[0])[:2])
        return reader.read(keys[name], rows).float(), True

    def task_delta(self, name: str):
        """Tensor `name`'s vector of one task at a time, as merge_tensor reads it."""
        return lambda task: self.delta(task, name)

    def chunk_deltas(self, name: str):
        """Tensor `name`'s vectors of every task, a chunk of rows at a time (a tensor of one number: all)."""
        return lambda rows: self.deltas(name, rows if self.shape(name) else None)

    def deltas(self, name: str, rows: slice | None = None) -> torch.Tensor:
        """Every task's vector of `name` [T, ...], float32, each checked to be finite. The fine-tunes'
        weights are stacked as read and the checkpoint's taken off in place: one copy of them fewer
        than stacking differences."""
        reads = [self._read(t, name, rows) for t in range(len(self.inputs))]
        stacked = torch.stack([read for read, _ in reads])
        for row, (_, fine_tune) in zip(stacked, reads):
            if fine_tune:
                row.sub_(self.pretrained(name, rows))
        if not torch.isfinite(stacked.sum()) and not torch.isfinite(stacked).all():  # the sum first: 10x faster
            task = next(t for t in range(len(stacked)) if not torch.isfinite(stacked[t]).all())
            raise ConfigError(f"task {self.inputs[task].task}'s vector has NaN or infinite values in {name!r}")
        return stacked


def tied_copies(files: TensorFiles, keys: dict[str, str]) -> dict[str, str]:
    """The checkpoint's matrices that repeat one of the network's `keys` (name -> key) exactly, by key: a
    tied output projection saved beside the input embedding it is (lm_head.weight beside wte.weight),
    which a merge writes once merged, as the same tensor, so that the two stay tied."""
    by_shape: dict[tuple, list[str]] = {}
    for name, key in keys.items():
        by_shape.setdefault((files.shape(key), files.dtype(key)), []).append(name)
    tied = {}
    for key in set(files.keys) - set(keys.values()):
        for name in by_shape.get((files.shape(key), files.dtype(key)), []):
            if len(files.shape(key)) == 2 and torch.equal(files.read(key), files.read(keys[name])):
                tied[key] = name
                break
    return tied


def head_of(item: VectorInput) -> tuple[dict[str, torch.Tensor], TaskSpec]:
    """A task's head (its state, as a pretrained run's head names it) and its spec: the row of a
    run, or the files `lsmn export --task` writes beside a fine-tune."""
    from safetensors.torch import load_file

    if item.run is not None:
        run = Path(item.run)
        meta = read_json(run / "run.json")
        prefix = f"heads.{meta['tasks'][item.index]['name']}."
        with_heads = TensorFiles([run / "model.safetensors"], f"run {run.name}")
        state = {key.removeprefix(prefix): with_heads.read(key) for key in with_heads.keys if key.startswith(prefix)}
        return state, TaskSpec.from_dict(meta["tasks"][item.index])
    folder = Path(item.finetune or "")
    record = read_json(folder / HEAD_RECORD)
    if not isinstance(record, dict) or not isinstance(record.get("spec"), dict):
        raise RunError(f"{folder / HEAD_RECORD}: names no task spec")
    try:
        spec = TaskSpec.from_dict(record["spec"])
    except (TypeError, ValueError) as exc:
        raise RunError(f"{folder / HEAD_RECORD}: {exc}") from None
    return load_file(str(folder / HEAD_WEIGHTS)), spec


def has_head(folder: Path) -> bool:
    return (folder / HEAD_WEIGHTS).is_file() and (folder / HEAD_RECORD).is_file()


def head_files(folder: Path) -> list[Path]:
    return [folder / HEAD_WEIGHTS, folder / HEAD_RECORD]
