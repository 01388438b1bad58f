"""Compact export of a masked run: only the weights some task uses, and sparse inference from it.

One safetensors file. Unmasked parameters are stored as they are. Each masked weight becomes
  union.<name>    numpy.packbits of "some task uses this weight" (1 bit per weight),
  values.<name>   float32 values of those weights, in row-major order,
  members.<name>  for each stored weight, the tasks that use it, bit-packed (ceil(T/8) bytes each).
The run's config and task specs travel in the file's metadata, so the model is rebuilt without
the data. For inference, `fastest_runner` picks CSR matrices or the dense path per task, by timing
both on the caller's batch. Loading reproduces every task's outputs exactly: weights no task uses never enter a
task's function, so storing them as zeros changes nothing.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from lsmn_core.store import routing
from lsmn_core.network.layers import residual_block
from lsmn_core.config import parse_config
from lsmn_core.errors import ConfigError, RunError
from lsmn_core.network.model import MultitaskModel, MultitaskNet
from lsmn_core.schemes import build_model
from lsmn_core.store.files import atomic_write, checked_safetensors
from lsmn_core.store.runs import Run
from lsmn_core.data.tasks import TaskSpec

FORMAT = "lsmn-export-1"


def export_run(run: Run, out: str | Path) -> dict:
    """Write the run's compact file; returns its size and the dense model file's size, in bytes."""
    model = run.load_model()
    if not model.masks():
        raise RunError(f"run {run.id} ({run.scheme}) has no masks: there is nothing to compact")
    size = export_model(model, run.meta, out)
    return {"bytes": size, "dense_bytes": (run.path / "model.safetensors").stat().st_size}


def export_model(model: MultitaskModel, meta: dict, out: str | Path) -> int:
    """Write `model` (with run.json's `config` and `tasks` in `meta`) compactly; returns the file size."""
    masks, state = model.masks(), model.state_dict()
    arrays = {f"dense.{name}": value.contiguous().numpy() for name, value in state.items() if name not in masks}
    for name, mask in masks.items():
        bits = mask.numpy()
        union = np.asarray(bits.any(0))
        weight = state[name].numpy()
        arrays[f"union.{name}"] = routing.pack(union)
        arrays[f"values.{name}"] = np.ascontiguousarray(weight[union])
        arrays[f"members.{name}"] = routing.pack(bits[:, union].T)  # [stored weights, ceil(T/8)]
    metadata = {"format": FORMAT, "config": json.dumps(meta["config"]), "tasks": json.dumps(meta["tasks"]),
                "shapes": json.dumps({n: list(m.shape[1:]) for n, m in masks.items()})}
    out = Path(out)
    atomic_write(out, lambda tmp: save_file(arrays, tmp, metadata=metadata))
    return out.stat().st_size


def load_export(path: str | Path) -> MultitaskModel:
    """Rebuild the model from a compact file (no pickle, no data needed)."""
    try:
        with safe_open(str(checked_safetensors(Path(path))), framework="numpy") as f:
            metadata = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise RunError(f"{path}: not a readable export ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise RunError(f"{path}: not an lsmn export (format {metadata.get('format')!r})")
    config = parse_config(json.loads(metadata["config"]), stored=True)
    specs = [TaskSpec.from_dict(t) for t in json.loads(metadata["tasks"])]
    shapes = json.loads(metadata["shapes"])
    model = build_model(specs, config)
    state = {k[len("dense."):]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("dense.")}
    n_tasks = len(specs)
    masks = {}
    for name, shape in shapes.items():
        union = routing.unpack(arrays[f"union.{name}"], shape)
        weight = np.zeros(shape, dtype=np.float32)
        weight[union] = arrays[f"values.{name}"]
        members = np.unpackbits(arrays[f"members.{name}"], axis=-1, count=n_tasks).astype(bool)  # [n, T]
        mask = np.zeros((n_tasks, *shape), dtype=bool)
        mask[:, union] = members.T
        state[name] = torch.from_numpy(weight)
        masks[name] = torch.from_numpy(mask)
    model.load_weights(state)
    routing.apply(model, {"masks": masks})
    return model.eval()


def _csr_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x [1, B, in] times a CSR weight [out, in]: one sparse matmul."""
    return (torch.sparse.mm(weight, x[0].T).T + bias[0]).unsqueeze(0)


class SparseInference:
    """One task of a masked model with its body matrices in CSR form (x W_t^T as a sparse matmul).

    Faster than dense on CPU when a task keeps a small share of each matrix; `lsmn bench` measures
    the ratio against the dense floor.
    """

    def __init__(self, model: MultitaskNet, task: int):
        if not model.body.block.fast_linear:
            raise ConfigError("sparse inference runs the mlp block's matrices in CSR form, not "
                              f"{model.body.block.name} blocks")
        self.model, self.task = model, task
        index = torch.tensor([task])
        self.layers = []
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        for layer in range(model.body.depth):
            params = {n: p.detach() for n, p in model.body.block_params(layer, index).items()}
            for name in ("w_in", "w_out"):
                params[name] = params[name][0].to_sparse_csr()
            self.layers.append(params)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.model.specs[self.task]
        h = self.model.encode(x, self.task).unsqueeze(0)
        for params in self.layers:
            h = residual_block(h, params, linear=_csr_linear)
        return self.model.heads[spec.name](h[0])


def fastest_runner(model: MultitaskNet, task: int, example: torch.Tensor, repeat: int = 5):
    """A callable for one task's inference: CSR (SparseInference) or the dense masked path, whichever
    is faster on `example`, timed here on this machine. Returns (runner, "csr" | "dense")."""
    sparse = SparseInference(model, task)

    @torch.no_grad()
    def dense(x):
        return model(x, task)

    def seconds(fn):
        fn(example)
        start = time.perf_counter()
        for _ in range(repeat):
            fn(example)
        return time.perf_counter() - start

    return (sparse, "csr") if seconds(sparse) < seconds(dense) else (dense, "dense")
