"""`lsmn bench`: each figure measured side by side in one process and reported as a ratio.

Entries so far (the performance issue extends the suite):
- export size: a masked model at 90% body sparsity, compact file against dense model.safetensors.
- sparse inference: one task run from the export with CSR body matrices against the dense floor
  (the same shapes computed dense, no masks).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from lsmn_core.config import parse_config
from lsmn_core.export import SparseInference, export_model, load_export
from lsmn_core.model import build_model
from lsmn_core.pruning import keep_largest
from lsmn_core.tasks import TaskSpec


def _timed(fn, repeat: int = 20) -> float:
    """Median seconds per call after a warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _vector_model(specs: list[TaskSpec], width: int, depth: int, scheme: dict):
    """A model over the given vector tasks (no data needed) and its config."""
    config = parse_config({"name": "bench", "tasks": [{"name": s.name, "dataset": "digits", "target": "digit"}
                                                      for s in specs],
                           "model": {"width": width, "depth": depth}, "scheme": scheme})
    return build_model(specs, config).eval(), config


def _masked_model(width: int, depth: int, keep: float, n_tasks: int = 2):
    """A mann model over vector inputs whose tasks each own `keep` of the body (disjoint masks)."""
    specs = [TaskSpec(name=f"t{i}", kind="classification", n_outputs=10, modality="vector", input_shape=[64],
                      sizes={"train": 1}) for i in range(n_tasks)]
    model, config = _vector_model(specs, width, depth, {"kind": "mann", "keep": keep})
    weights = dict(model.body.named_parameters())
    owned = {n: torch.zeros_like(m[0]) for n, m in model.body.masks().items()}
    total = sum(m.numel() for m in owned.values())
    for t in range(n_tasks):
        mask = keep_largest(weights, {n: ~o for n, o in owned.items()}, round(keep * total))
        model.body.set_task_masks(t, mask)
        owned = {n: owned[n] | mask[n] for n in owned}
    meta = {"config": config.to_dict(), "tasks": [s.to_dict() for s in specs]}
    return model, meta


def bench_export(width: int = 1024, depth: int = 4) -> list[dict]:
    model, meta = _masked_model(width, depth, keep=0.05)
    with tempfile.TemporaryDirectory() as tmp:
        dense = Path(tmp) / "model.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dense))
        size = export_model(model, meta, Path(tmp) / "export.safetensors")
        exported = load_export(Path(tmp) / "export.safetensors")
        ratio = size / dense.stat().st_size
    x = torch.rand(8, 64)
    exact = all(torch.equal(model(x, t), exported(x, t)) for t in range(2))
    return [{"name": f"export size, 90% body sparsity, width {width} (outputs bit-identical: {exact})",
             "value": size / 2**20, "unit": "MiB", "baseline": "dense model.safetensors", "ratio": ratio,
             "target": 0.20, "better": "lower"}]


def bench_sparse_inference(width: int = 1024, depth: int = 4, batch: int = 16) -> list[dict]:
    model, _ = _masked_model(width, depth, keep=0.05)
    dense, _ = _vector_model(model.specs, width, depth, {"kind": "hard"})
    sparse = SparseInference(model, 0)
    x = torch.rand(batch, 64)
    with torch.no_grad():
        floor = _timed(lambda: dense(x, 0))
        csr = _timed(lambda: sparse(x))
    return [{"name": f"sparse inference, density 5%, width {width}, batch {batch}", "value": csr * 1e3,
             "unit": "ms", "baseline": f"dense floor {floor * 1e3:.2f} ms", "ratio": floor / csr, "target": 1.5,
             "better": "higher"}]


def run_benchmarks() -> dict:
    return {"device": f"cpu ({torch.get_num_threads()} threads)",
            "results": bench_export() + bench_sparse_inference()}
