"""Routing documents: a scheme's per-task state as `routing.json` + `routing.safetensors`, validated.

Every document names the scheme and the task order. For masked schemes, `routing.safetensors`
holds `masks.<parameter name>`, the masks of all tasks stacked [T, *shape], bit-packed with
numpy.packbits along the last axis; `routing.json` records the encoding and each mask's unpacked
shape. A scheme adds its own part of the document (signatures, an alignment, allowed experts)
through routing_document / parse_routing_document. Edited routings go through the same checks
before they touch a model, so an invalid edit is refused with one message and changes nothing.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from lsmn_core.network.layers import mask_layer
from lsmn_core.errors import RoutingError, RunError
from lsmn_core.store.files import checked_safetensors, read_json

SCHEMA_VERSION = 1
PACKBITS = "packbits-last-axis"
PLAIN = "bool"


def pack(mask: np.ndarray) -> np.ndarray:
    return np.packbits(mask.astype(bool), axis=-1)


def unpack(packed: np.ndarray, shape: list[int]) -> np.ndarray:
    return np.unpackbits(packed, axis=-1, count=shape[-1]).view(bool).reshape(shape)  # 0s and 1s: no copy


def encode(model) -> tuple[dict, dict[str, np.ndarray]]:
    """The model's routing as (routing.json document, arrays for routing.safetensors)."""
    doc = {"schema_version": SCHEMA_VERSION, "scheme": model.body.kind, "tasks": model.task_names}
    arrays = {}
    masks, groups = model.masks(), model.mask_groups()
    if masks:
        doc["mask_encoding"], doc["masks"] = PACKBITS, {}
        for name, mask in masks.items():
            key = f"masks.{name}"
            arrays[key] = pack(mask.cpu().numpy())
            doc["masks"][name] = {"key": key, "shape": list(mask.shape), "layer": model.mask_layer(name),
                                  **({"group": groups[name]} if name in groups else {})}
    doc.update(model.body.routing_document(model.task_names))
    return doc, arrays


def decode(doc: dict, arrays: dict[str, np.ndarray], model) -> dict:
    """Validate a routing document against `model`; return the state to install with `apply`.

    The state holds "masks" ({parameter name: bool [T, *shape]}) where the model has masks, plus
    whatever the scheme reads from its own part of the document (e.g. mixture signatures).
    """
    if not isinstance(doc, dict):
        raise RoutingError("routing.json must hold a JSON object")
    if doc.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise RoutingError(f"routing schema_version {str(doc['schema_version'])[:20]} is not {SCHEMA_VERSION}, "
                           "the one this version reads")
    if doc.get("tasks") != model.task_names:
        raise RoutingError(f"routing tasks {str(doc.get('tasks'))[:200]} do not match the run's tasks "
                           f"{str(model.task_names)[:200]}")
    state = model.body.parse_routing_document(doc, model.task_names)
    expected = {name: list(m.shape) for name, m in model.masks().items()}
    if expected:
        state["masks"] = _decode_masks(doc, arrays, expected)
    return state


def _decode_masks(doc: dict, arrays: dict[str, np.ndarray], expected: dict[str, list[int]]) -> dict:
    entries = doc.get("masks", {})
    if not isinstance(entries, dict):
        raise RoutingError(f"routing masks must be an object of mask entries, not {type(entries).__name__}")
    if set(entries) != set(expected):
        missing = sorted(set(expected) - set(entries)) or sorted(set(entries) - set(expected))
        raise RoutingError(f"routing masks do not match the model's prunable weights (first difference: {missing[:1]})")
    encoding = doc.get("mask_encoding")
    if encoding not in (PACKBITS, PLAIN):
        raise RoutingError(f"unknown mask_encoding {encoding!r} (expected {PACKBITS!r} or {PLAIN!r})")
    masks = {}
    for name, shape in expected.items():
        entry = entries[name]
        key = _entry_key(name, entry)
        if not isinstance(key, str):
            raise RoutingError(f"routing masks: the entry for {name} needs a tensor name under 'key'")
        if entry.get("shape", shape) != shape:  # editors read the entry's shape: it must be the model's
            raise RoutingError(f"routing masks: the entry for {name} says shape {str(entry['shape'])[:80]}, "
                               f"the model's mask is {shape}")
        if key not in arrays:
            where = "routing.safetensors" if arrays else "the routing (no routing.safetensors beside routing.json)"
            raise RoutingError(f"{where} has no tensor {key!r}")
        array = arrays[key]
        if encoding == PACKBITS:
            packed_shape = [*shape[:-1], (shape[-1] + 7) // 8]
            if array.dtype != np.uint8 or list(array.shape) != packed_shape:
                raise RoutingError(f"{key}: expected uint8 {packed_shape}, got {array.dtype} {list(array.shape)}")
            mask = unpack(array, shape)
        else:
            if list(array.shape) != shape or array.dtype not in (np.bool_, np.uint8):
                raise RoutingError(f"{key}: expected bool {shape}, got {array.dtype} {list(array.shape)}")
            if array.dtype == np.uint8 and array.max(initial=0) > 1:
                raise RoutingError(f"{key}: a mask holds only 0 and 1")
            mask = array.astype(bool)
        masks[name] = torch.from_numpy(mask)
    return masks


MASK_ACTIONS = ("keep", "reset", "clear")  # and "copy:<task>"


def edit_masks(doc: dict, arrays: dict[str, np.ndarray], actions: dict[tuple[str, int], str],
               layers: Mapping[str, int] | None = None) -> dict:
    """A routing's mask arrays with per (task, layer) actions applied: keep, reset (every weight),
    clear (no weight), or copy:<task> (that task's mask, as it was before any edit). A layer is a body
    block, or ENCODER_LAYER for the shared encoders' masks; `layers` gives each mask's (the run's
    model knows them, Run.mask_layers), else it is read from the mask's name (mask_layer)."""
    tasks = doc.get("tasks", [])
    for (task, _), action in actions.items():
        source = action[len("copy:"):] if action.startswith("copy:") else None
        if task not in tasks or (action not in MASK_ACTIONS and source not in tasks):
            raise RoutingError(f"mask edit {task!r}: {action!r} is not keep, reset, clear or copy:<task>")
    edited = dict(arrays)
    for name, entry in doc["masks"].items():
        layer = layers[name] if layers is not None else mask_layer(name)
        original = unpack(arrays[entry["key"]], entry["shape"])
        mask = original.copy()
        for (task, block), action in actions.items():
            if block != layer or action == "keep":
                continue
            t = tasks.index(task)
            if action.startswith("copy:"):
                mask[t] = original[tasks.index(action[len("copy:"):])]
            else:
                mask[t] = action == "reset"
        edited[entry["key"]] = pack(mask)
    return edited


def write(folder: Path, doc: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write a routing pair (routing.json + routing.safetensors) into `folder`; returns the json path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "routing.json").write_text(json.dumps(doc))
    save_file(arrays, str(folder / "routing.safetensors"))
    return folder / "routing.json"


def _entry_key(name: str, entry) -> str | None:
    """The tensor name a routing document's mask entry points to (None for an entry that is not an object)."""
    return entry.get("key", f"masks.{name}") if isinstance(entry, dict) else None


def _check_sizes(doc: dict, sizes: dict[str, int], model) -> None:
    """RoutingError for a named tensor of more elements than the model's mask it is named for
    (a bit-packed mask has fewer; a tensor named for no mask of the model may hold none)."""
    limits = {name: math.prod(mask.shape) for name, mask in model.masks().items()}
    for name, entry in doc["masks"].items():
        key = _entry_key(name, entry)
        if key in sizes and sizes[key] > limits.get(name, 0):
            raise RoutingError(f"routing.safetensors: {key!r} holds {sizes[key]:,} values, more than the "
                               f"{limits.get(name, 0):,} of the model's mask {str(name)[:80]!r}")


def _named_tensors(doc) -> list[str]:
    """The tensors a routing document names: its masks'. The file may hold others for the record
    (every pruning round's masks: 49 MB of a 1,000-task run's 57), which no reader of the routing needs."""
    entries = doc.get("masks") if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        return []
    keys = [_entry_key(name, entry) for name, entry in entries.items()]
    return [key for key in keys if isinstance(key, str)]


def read(path: Path, model=None) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a routing pair: `path` is a folder holding both files, or either file of the pair; of
    the tensors, only those the document names are read, and with `model` given, only those no
    larger than the mask of `model` they stand for (sizes read from the header, before any tensor:
    a hostile file cannot make the reader allocate more than the model's masks). `decode` then
    checks their exact shapes.

    The .safetensors file may be absent when the document carries no masks."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    stem = "routing" if path.is_dir() else path.stem
    json_path, tensor_path = folder / f"{stem}.json", folder / f"{stem}.safetensors"
    if not os.path.lexists(json_path):
        raise RoutingError(f"routing file not found: {json_path}")
    try:
        doc = read_json(json_path)
        if not os.path.lexists(tensor_path):  # a routing without masks (e.g. signatures) needs no tensor file
            return doc, {}
        with safe_open(str(checked_safetensors(tensor_path)), framework="numpy") as tensors:
            stored = set(tensors.keys())
            named = [key for key in _named_tensors(doc) if key in stored]
            if model is not None and named:  # named tensors: the document's masks are a dict
                _check_sizes(doc, {key: math.prod(tensors.get_slice(key).get_shape()) for key in named}, model)
            arrays = {key: tensors.get_tensor(key) for key in named}
    except RunError as exc:
        raise RoutingError(str(exc)) from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise RoutingError(f"{tensor_path}: not a readable safetensors file ({exc})") from None
    return doc, arrays


def apply(model, state: dict) -> None:
    """Install a decoded routing state into the model's scheme (on the model's device)."""
    device = next(model.parameters()).device
    state = dict(state)
    if "masks" in state:
        state["masks"] = {name.removeprefix("body."): m.to(device) for name, m in state["masks"].items()}
    model.body.load_routing(state)


def apply_buffers(model, state: dict) -> None:
    """Install the parts of a decoded routing that are buffers (masks, alignments, allowed experts),
    for a model whose weights were just loaded: routing parameters (signatures) already come bit for
    bit from those weights, and routing.json only mirrors them."""
    apply(model, {k: v for k, v in state.items() if k not in model.body.routing_parameters()})
