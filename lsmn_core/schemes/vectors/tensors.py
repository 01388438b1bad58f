"""Named tensors read from weights files one at a time, a chunk of rows at a time where asked: a
task vectors run never holds a whole fine-tune. safetensors files are opened lazily (`safe_open`:
only the rows asked for are read); a `.bin` state dict is memory-mapped with `weights_only=True` (no
code is unpickled). A fine-tune saved with a task head around the network (`bert.` before every
name, `classifier.` beside) is read by the network's own names; what it holds beyond them is its
head's."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from lsmn_core.errors import ConfigError
from lsmn_core.plugins import one_line

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}


class TensorFiles:
    """The tensors of one checkpoint's weights files, by their names in the files."""

    def __init__(self, files: list[Path], where: str):
        self.where, self._handles, self._states = where, {}, {}
        self.keys: dict[str, Path] = {}
        for file in files:
            try:
                if file.suffix == ".safetensors":
                    handle = safe_open(str(file), "pt")
                    self._handles[file] = handle
                    names = list(handle.keys())
                else:
                    self._states[file] = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
                    names = list(self._states[file])
            except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
                raise ConfigError(f"{where}: cannot read {file.name}: {one_line(exc)}") from None
            self.keys.update({name: file for name in names})

    def shape(self, key: str) -> tuple[int, ...]:
        file = self.keys[key]
        if file in self._handles:
            return tuple(self._handles[file].get_slice(key).get_shape())
        return tuple(self._states[file][key].shape)

    def dtype(self, key: str) -> torch.dtype:
        file = self.keys[key]
        if file in self._handles:
            return DTYPES[self._handles[file].get_slice(key).get_dtype()]
        return self._states[file][key].dtype

    def read(self, key: str, rows: slice | None = None, index: int | None = None) -> torch.Tensor:
        """The tensor `key` (its `index` along a leading axis first, then `rows`), as stored."""
        file = self.keys[key]
        if file in self._handles:
            part = self._handles[file].get_slice(key)
            selection = tuple(s for s in (index, rows) if s is not None)
            return part[selection] if selection else part[:]
        tensor = self._states[file][key]
        tensor = tensor[index] if index is not None else tensor
        return (tensor[rows] if rows is not None else tensor).clone()


def name_map(files: TensorFiles, names: list[str], where: str) -> tuple[dict[str, str], list[str]]:
    """The key in `files` of every network parameter in `names` (the network's names, or each behind
    one common prefix such as "bert."), and the keys left over (a task head's)."""
    prefixes = [""] + sorted({key.split(".", 1)[0] + "." for key in files.keys if "." in key})
    for prefix in prefixes:
        if all(prefix + name in files.keys for name in names):
            mapped = {name: prefix + name for name in names}
            return mapped, sorted(set(files.keys) - set(mapped.values()))
    missing = next(name for name in names if name not in files.keys)
    raise ConfigError(f"{where}: holds no {missing!r} (nor behind a prefix): a fine-tune of another network?")
