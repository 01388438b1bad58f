"""`lsmn bench`: each figure measured side by side in one process and reported as a ratio.

Entries so far (the performance issue extends the suite):
- export size: a masked model at 90% body sparsity, compact file against dense model.safetensors.
- sparse inference: one task run from the export with CSR body matrices against the dense floor
  (the same shapes computed dense, no masks).
- masked multitask step: one masked block, forward + backward, for T tasks on one shared batch,
  against a loop over tasks, torch.nn.utils.prune's hook design and the dense floor (on a GPU also
  at T = 64, width 4096 under bf16 autocast, against the dense bf16 floor).
- iterative magnitude pruning: T tasks' IMP rounds side by side (batched, each task with its own
  copy of the body) against one task after another; the masks must come out the same.
- MUiR generation: every location's soft-merged candidate blocks, column by column (the scheme's
  way) against one einsum over all candidates.
- mixture blocks: blocks generated from templates, then run, against plain per-task blocks.
- analysis at scale: the overlap counts of 1,000 tasks x 10M weights from bit-packed masks (popcount),
  and the memory those masks take, against float32 masks.
- streaming: a task backed by a 2 GB memory-mapped file, streamed, against the same task in memory
  (peak resident memory, each side in its own process, and the time of a training step).
- app pages: every page rendered (Streamlit's AppTest) on a run of 100 tasks x 16 layers, and on a
  run of 1,000 tasks (configs/scale-1000.yaml's).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torch.nn.utils.prune
from safetensors.torch import save_file

from analysis.bitcount import packed_intersections
from lsmn.bench_pretrained import bench_pretrained
from lsmn.bench_vectors import bench_vectors
from lsmn_core.network.layers import block_branch
from lsmn_core.config import load_config, load_yaml, parse_config
from lsmn_core.data.loading import load_tasks
from lsmn_core.store.export import SparseInference, export_model, load_export
from lsmn_core.schemes.magnitude import keep_largest
from lsmn_core.schemes import build_model
from lsmn_core.schemes.hyper.hypermodules import Hypermodules
from lsmn_core.schemes.hyper.search import sample_challengers
from lsmn_core.store.runs import list_runs, open_run
from lsmn_core.data.tasks import TaskSpec
from lsmn_core.training.session import Phase
from lsmn_core.training.trainer import DeviceTasks, Reporter, TrainingSession, train


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _synchronize() -> None:
    """Wait for queued GPU work, so that a timer reads the work and not its launch."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timed(calls: Mapping[str, Callable[[], object]], budget: float = 3.0, most: int = 25) -> dict[str, float]:
    """Median seconds per call of each contender. After a warm-up round the contenders take turns,
    round after round, so that the shared machine's drift touches them all alike; as many rounds
    as fit in `budget` seconds, at least 3 and at most `most`."""
    def once(fn) -> float:
        _synchronize()
        start = time.perf_counter()
        fn()
        _synchronize()
        return time.perf_counter() - start

    warm_up = sum(once(fn) for fn in calls.values())
    rounds = max(3, min(most, int(budget / max(warm_up, 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            times[name].append(once(fn))
    return {name: _median(t) for name, t in times.items()}


def _vector_specs(n_tasks: int, inputs: int, classes: int = 2) -> list[TaskSpec]:
    """Classification tasks over vector inputs, described without data."""
    return [TaskSpec(name=f"t{i}", kind="classification", n_outputs=classes, modality="vector",
                     input_shape=[inputs], sizes={"train": 1}) for i in range(n_tasks)]


def _vector_model(specs: list[TaskSpec], width: int, depth: int, scheme: dict, block: str = "mlp"):
    """A model over the given vector tasks (no data needed) and its config."""
    config = parse_config({"name": "bench", "tasks": [{"name": s.name, "dataset": "digits", "target": "digit"}
                                                      for s in specs],
                           "model": {"width": width, "depth": depth, "block": block}, "scheme": scheme})
    return build_model(specs, config).eval(), config


def _masked_model(width: int, depth: int, keep: float, n_tasks: int = 2):
    """A mann model over vector inputs whose tasks each own `keep` of the body (disjoint masks)."""
    specs = _vector_specs(n_tasks, 64, classes=10)
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
        times = _timed({"floor": lambda: dense(x, 0), "csr": lambda: sparse(x)})
    floor, csr = times["floor"], times["csr"]
    return [{"name": f"sparse inference, density 5%, width {width}, batch {batch}", "value": csr * 1e3,
             "unit": "ms", "baseline": f"dense floor {floor * 1e3:.2f} ms", "ratio": floor / csr, "target": 1.5,
             "better": "higher"}]


def _train_step(forward, params: Sequence[torch.Tensor]) -> Callable[[], None]:
    """One forward + backward of `forward()` with fresh gradients, as a timed call."""
    def step():
        for p in params:
            p.grad = None
        forward().square().mean().backward()
    return step


def _masked_step_contenders(n_tasks: int, width: int, batch: int, device: str) -> dict[str, Callable[[], None]]:
    """One masked body block, forward + backward, for `n_tasks` tasks on one shared batch, four ways.

    - lsmn: the sparse scheme's body (shared weights, per-task bit-packed masks; on a CPU task by
      task through MaskedLinear with the masks as floats, on a GPU one batched matmul);
    - loop: the same parameters and masks, one task after another;
    - prune-hook: torch.nn.utils.prune's design, a pruned copy per task whose forward pre-hook
      recomputes weight * mask;
    - floor: the same shapes dense and unmasked (per-task weights), batched (bmm over tasks) or
      per task (addmm on the shared batch), the faster.
    """
    specs = _vector_specs(n_tasks, width)
    model, _ = _vector_model(specs, width, 1, {"kind": "sparse"})
    body = model.body.to(device)
    generator = torch.Generator().manual_seed(0)
    masks = {name: torch.rand(mask.shape, generator=generator) < 0.5  # half, differently per task
             for name, mask in body.masks().items()}
    body.load_routing({"masks": masks})
    tasks = torch.arange(n_tasks, device=device)
    x = torch.randn(batch, width, device=device)
    h = x.expand(n_tasks, batch, width)
    shared = list(body.parameters())

    def loop():
        return torch.stack([body(h[i : i + 1], tasks[i : i + 1])[0] for i in range(n_tasks)])

    hidden = body.blocks[0]["w_in"].shape[0]
    copies = []
    for t in range(n_tasks):
        layers = torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, hidden), torch.nn.GELU(),
                                     torch.nn.Linear(hidden, width))
        for layer, name in ((layers[1], "w_in"), (layers[3], "w_out")):
            torch.nn.utils.prune.custom_from_mask(layer, "weight", masks[f"blocks.0.{name}"][t].float())
        copies.append(layers.to(device))
    hooked = [p for c in copies for p in c.parameters()]

    dense = {n: torch.randn(n_tasks, *p.shape, device=device, requires_grad=True) for n, p in body.blocks[0].items()}

    def floor_batched():
        return block_branch(h, dense)

    per_task = [{n: p[i].detach().clone().requires_grad_() for n, p in dense.items()} for i in range(n_tasks)]

    def floor_loop():  # per task, on the shared batch, with addmm; separate tensors, so no gradient scatter
        def branch(p):
            y = F.layer_norm(x, (width,), p["norm_weight"], p["norm_bias"])
            return F.linear(F.gelu(F.linear(y, p["w_in"], p["b_in"])), p["w_out"], p["b_out"])
        return torch.stack([branch(p) for p in per_task])

    return {"lsmn": _train_step(lambda: body(h, tasks), shared),
            "loop": _train_step(loop, shared),
            "prune-hook": _train_step(lambda: torch.stack([c(x) for c in copies]), hooked),
            "floor, batched": _train_step(floor_batched, list(dense.values())),
            "floor, per task": _train_step(floor_loop, [p for ps in per_task for p in ps.values()])}


def bench_masked_step(sizes=((4, 256), (16, 256), (64, 256), (4, 1024), (16, 1024), (64, 1024)),
                      batch: int = 64, device: str = "cpu") -> list[dict]:
    results = []
    for n_tasks, width in sizes:
        times = _timed(_masked_step_contenders(n_tasks, width, batch, device), budget=10.0)
        floor = min(times["floor, batched"], times["floor, per task"])
        which = "batched" if times["floor, batched"] <= times["floor, per task"] else "per task"
        others = ", ".join(f"{k} {times[k] * 1e3:.1f} ms" for k in ("loop", "prune-hook"))
        results.append({
            "name": f"masked multitask step (forward + backward, one block), T={n_tasks}, width {width}, "
                    f"batch {batch}; {others}",
            "value": times["lsmn"] * 1e3, "unit": "ms", "baseline": f"dense floor ({which}) {floor * 1e3:.1f} ms",
            "ratio": times["lsmn"] / floor, "target": 1.15, "better": "lower"})
    return results


def bench_masked_step_bf16(n_tasks: int = 64, width: int = 4096, batch: int = 64, device: str = "cuda") -> list[dict]:
    """The masked multitask step as training runs it on a GPU (bf16 autocast over float32 weights,
    one block, forward + backward) against the dense floor of the same shapes under the same
    autocast: per-task dense weights, one batched bmm over tasks."""
    specs = _vector_specs(n_tasks, width)
    model, _ = _vector_model(specs, width, 1, {"kind": "sparse"})
    body = model.body.to(device)
    generator = torch.Generator().manual_seed(0)
    body.load_routing({"masks": {name: torch.rand(mask.shape, generator=generator) < 0.5
                                 for name, mask in body.masks().items()}})
    tasks = torch.arange(n_tasks, device=device)
    h = torch.randn(batch, width, device=device).expand(n_tasks, batch, width)
    dense = {n: torch.randn(n_tasks, *p.shape, device=device, requires_grad=True) for n, p in body.blocks[0].items()}

    def under_autocast(forward):
        def run():
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
                return forward().float()
        return run

    times = _timed({"lsmn": _train_step(under_autocast(lambda: body(h, tasks)), list(body.parameters())),
                    "floor": _train_step(under_autocast(lambda: block_branch(h, dense)), list(dense.values()))},
                   budget=10.0)
    return [{"name": f"masked multitask step, bf16 autocast (forward + backward, one block), T={n_tasks}, "
                     f"width {width}, batch {batch}",
             "value": times["lsmn"] * 1e3, "unit": "ms", "baseline": f"dense bf16 floor {times['floor'] * 1e3:.1f} ms",
             "ratio": times["lsmn"] / times["floor"], "target": 1.3, "better": "lower"}]


BLOCK_ACTIVATIONS = {"conv": (32, 8, 8), "attention": (16, 64)}  # [C, H, W] and [tokens, d]


def _block_step_contenders(block: str, n_tasks: int, batch: int, device: str) -> dict[str, Callable[[], None]]:
    """One masked body block of `block` (a module block, run with torch.func), forward + backward,
    for `n_tasks` tasks on one shared batch: the sparse scheme's body, one task after another,
    torch.nn.utils.prune's hooks on a pruned copy per task, and the dense floor (the independent
    scheme's per-task blocks, batched the same way)."""
    activation = BLOCK_ACTIVATIONS[block]
    width = activation[0] if block == "conv" else activation[-1]
    specs = _vector_specs(n_tasks, width)
    model, _ = _vector_model(specs, width, 1, {"kind": "sparse"}, block)
    body = model.body.to(device)
    generator = torch.Generator().manual_seed(0)
    masks = {name: torch.rand(mask.shape, generator=generator) < 0.5 for name, mask in body.masks().items()}
    body.load_routing({"masks": masks})
    dense = _vector_model(specs, width, 1, {"kind": "independent"}, block)[0].body.to(device)
    tasks = torch.arange(n_tasks, device=device)
    h = torch.randn(batch, *activation, device=device).expand(n_tasks, batch, *activation)

    def loop():
        return torch.stack([body(h[i : i + 1], tasks[i : i + 1])[0] for i in range(n_tasks)])

    copies = []
    for t in range(n_tasks):
        module = body.block.make()
        for name, mask in masks.items():
            path, _, parameter = name.split(".", 2)[-1].replace("__", ".").rpartition(".")
            torch.nn.utils.prune.custom_from_mask(module.get_submodule(path), parameter, mask[t].float())
        copies.append(module.to(device))
    return {"lsmn": _train_step(lambda: body(h, tasks), list(body.parameters())),
            "loop": _train_step(loop, list(body.parameters())),
            "prune-hook": _train_step(lambda: torch.stack([c(h[0]) for c in copies]),
                                      [p for c in copies for p in c.parameters()]),
            "floor": _train_step(lambda: dense(h, tasks), list(dense.parameters()))}


def bench_block_step(blocks=("conv", "attention"), task_counts=(4, 16), batch: int = 32,
                     device: str = "cpu") -> list[dict]:
    """The masked multitask step of module blocks (conv, attention), and their mixture generation."""
    results = []
    for block in blocks:
        shape = " x ".join(map(str, BLOCK_ACTIVATIONS[block]))
        for n_tasks in task_counts:
            times = _timed(_block_step_contenders(block, n_tasks, batch, device), budget=6.0)
            others = ", ".join(f"{k} {times[k] * 1e3:.1f} ms" for k in ("loop", "prune-hook"))
            results.append({
                "name": f"masked multitask step, {block} block on {shape}, T={n_tasks}, batch {batch}; {others}",
                "value": times["lsmn"] * 1e3, "unit": "ms", "baseline": f"dense floor {times['floor'] * 1e3:.1f} ms",
                "ratio": times["lsmn"] / times["floor"], "target": 1.3, "better": "lower"})
        results += bench_mixture_blocks(n_tasks=16, templates=8, batch=batch, device=device, block=block)
    return results


def bench_batched_imp(n_tasks: int = 8, width: int = 128, round_steps: int = 20, repeats: int = 3,
                      device: str = "cpu") -> list[dict]:
    """The sparse scheme's IMP search (5 rounds per task: density 1 to 1/16) for T tasks: all tasks'
    rounds at once against one task after another, after a warm-up, the two ways taking turns
    `repeats` times (median). Two task sets: Kang's vector regressions (the body dominates) and
    one-against-the-rest digits (each task's copy of the convolutional encoder runs on its own, so
    the encoders dominate)."""
    task_sets = {
        "Kang vector regressions": [{"name": f"t{i}", "dataset": "kang_synthetic", "target": str(i), "domain": "clean"}
                                    for i in range(n_tasks)],
        "one-against-the-rest digit images": [{"name": f"is{d}", "dataset": "digits", "target": f"is{d}"}
                                              for d in range(n_tasks)]}

    def search(tasks: list[dict], tasks_at_once: int):
        config = parse_config({
            "name": "bench", "seed": 0, "tasks": tasks, "model": {"width": width, "depth": 2},
            "scheme": {"kind": "sparse", "prune_rate": 0.5, "min_density": 0.1, "round_steps": round_steps,
                       "tasks_at_once": tasks_at_once},
            "train": {"batch_size": 64, "device": device}})
        data = load_tasks(config.tasks, config.data)
        model = build_model([d.spec for d in data], config).to(device)
        session = TrainingSession(model, DeviceTasks(data, torch.device(device), config), config,
                                  Reporter(None, quiet=True))
        _synchronize()
        start = time.perf_counter()
        report = model.body.search_routing(session)
        _synchronize()
        seconds = time.perf_counter() - start
        return seconds, model.body.masks(), max(len(r["rounds"]) for r in report.summary["pruning"].values())

    results = []
    for label, tasks in task_sets.items():
        search(tasks, n_tasks)  # warm-up: the first optimiser and first batches pay one-off costs
        together, alone = [], []
        for _ in range(repeats):
            seconds, masks, rounds = search(tasks, n_tasks)
            together.append(seconds)
            seconds, reference, _ = search(tasks, 1)
            alone.append(seconds)
        same = all(torch.equal(masks[n], m) for n, m in reference.items())
        results.append({
            "name": f"iterative magnitude pruning, T={n_tasks} {label}, width {width}, {rounds} rounds x {round_steps} "
                    f"steps, all tasks side by side (masks equal to one-by-one: {same}); median of {repeats}",
            "value": _median(together), "unit": "s", "baseline": f"one task after another {_median(alone):.2f} s",
            "ratio": _median(alone) / _median(together), "target": 2.0, "better": "higher"})
    return results


def bench_muir_generation(n_tasks: int = 16, width: int = 128, challengers: int = 4, device: str = "cpu") -> list[dict]:
    """The blocks of every location during a generation (1 + lambda soft-merged candidates each),
    forward + backward: the scheme's way (one contraction over all locations per candidate column)
    against one einsum over all locations and candidates at once."""
    specs = _vector_specs(n_tasks, width)
    config = parse_config({"name": "bench", "tasks": [{"name": s.name, "dataset": "digits", "target": "digit",
                                                       "architecture": "mlp"} for s in specs],
                           "model": {"width": width, "depth": 2},
                           "scheme": {"kind": "hyper", "block": [16, 16], "challengers": challengers}})
    body = build_model(specs, config).body.to(device)
    if not isinstance(body, Hypermodules):
        raise TypeError(f"the hyper scheme built a {type(body).__name__}")
    candidates, active, _ = sample_challengers(body.alignment.tolist(), body.n_hypermodules, config.scheme,
                                               np.random.RandomState(0))
    body.begin_generation(candidates, active.fill_(True))
    locations = torch.arange(len(body.alignment), device=device)
    chosen, _, _, scores = body.generation()
    params = [body.hypermodules, body.contexts, scores]

    def one_einsum():  # the same sum over a gathered [l, 1 + lambda, m, n, c] tensor
        z, gain = body.contexts[locations], body.gain[locations][:, None, None]
        stacked = body.hypermodules[chosen[locations]]
        return torch.einsum("lkmnc,lc,lk->lmn", stacked, z, body.candidate_weights()[locations]) * gain

    times = _timed({"columns": _train_step(lambda: body.blocks(locations), params),
                    "at once": _train_step(one_einsum, params)})
    columns, at_once = times["columns"], times["at once"]
    return [{"name": f"MUiR generation: blocks of {len(locations)} locations x {challengers + 1} candidates "
                     f"({n_tasks} MLP tasks, width {width}, 16 x 16 blocks), forward + backward, per candidate column",
             "value": columns * 1e3, "unit": "ms", "baseline": f"one einsum over all candidates {at_once * 1e3:.2f} ms",
             "ratio": at_once / columns, "target": 1.0, "better": "higher"}]


def bench_mixture_blocks(n_tasks: int = 16, width: int = 256, templates: int = 8, batch: int = 64,
                         device: str = "cpu", block: str = "mlp") -> list[dict]:
    """A mixture body (each task's block generated from K templates by its signature, then run)
    against plain per-task blocks of the same shapes (independent), forward + backward."""
    activation = BLOCK_ACTIVATIONS.get(block, (width,))
    width = activation[0] if block == "conv" else activation[-1]
    specs = _vector_specs(n_tasks, width)
    mixture, _ = _vector_model(specs, width, 2, {"kind": "mixture", "templates": templates}, block)
    plain, _ = _vector_model(specs, width, 2, {"kind": "independent"}, block)
    mixture, plain = mixture.to(device), plain.to(device)
    tasks = torch.arange(n_tasks, device=device)
    h = torch.randn(n_tasks, batch, *activation, device=device)
    times = _timed({"generated": _train_step(lambda: mixture.body(h, tasks), list(mixture.body.parameters())),
                    "floor": _train_step(lambda: plain.body(h, tasks), list(plain.body.parameters()))})
    generated, floor = times["generated"], times["floor"]
    shape = " x ".join(map(str, activation))
    return [{"name": f"mixture blocks: {block} on {shape}, K={templates} templates, T={n_tasks}, depth 2, "
                     f"batch {batch}; generation + forward + backward",
             "value": generated * 1e3, "unit": "ms", "baseline": f"plain per-task blocks {floor * 1e3:.2f} ms",
             "ratio": generated / floor, "target": 1.2, "better": "lower"}]


def bench_overlap_at_scale(n_tasks: int = 1000, n_weights: int = 10_000_000, device: str = "cpu") -> list[dict]:
    """Pairwise intersection counts of random bit-packed masks, and the traced peak memory of
    holding and analysing them (on the host; on a GPU also the device's peak); on a CPU the float32
    GEMM over unpacked masks is timed on a slice."""
    rng = np.random.default_rng(0)
    tracemalloc.start()
    packed = rng.integers(0, 256, (n_tasks, n_weights // 8), dtype=np.uint8)  # random masks, packed
    packed_intersections(packed[:4, :64], device)  # compiles the kernel (or loads it from numba's cache)
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    counts = packed_intersections(packed, device)  # from host to host: the upload is counted
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    spots = ((0, 1), (n_tasks - 1, n_tasks // 2), (n_tasks // 3, n_tasks // 3))
    exact = all(counts[i, j] == np.bitwise_count(packed[i] & packed[j]).sum() for i, j in spots)
    if device == "cpu":
        part = 20_000  # weights in the GEMM slice
        unpacked = np.unpackbits(packed[:, : part // 8], axis=1).astype(np.float32)
        gemm = _timed({"gemm": lambda: unpacked @ unpacked.T})["gemm"] * n_weights / part
        how = f"popcount over packed masks; a float32 GEMM over unpacked masks would take {gemm:.0f} s"
        held = ""
    else:
        how = "bits unpacked on the device a slice at a time, int8 GEMMs, upload from the host included"
        held = f"; device peak {torch.cuda.max_memory_allocated() / 1e9:.2f} GB"
    floats = n_tasks * n_weights * 4
    return [
        {"name": f"overlap counts, {n_tasks} tasks x {n_weights // 10**6}M weights, {how} (spot checks exact: {exact})",
         "value": seconds, "unit": "s", "baseline": "target 2 s", "ratio": seconds / 2.0, "target": 1.0,
         "better": "lower"},
        {"name": f"memory: masks of {n_tasks} tasks x {n_weights // 10**6}M weights held bit-packed, traced host "
                 f"peak while analysing them{held}",
         "value": peak / 1e9, "unit": "GB", "baseline": f"float32 masks {floats / 1e9:.0f} GB",
         "ratio": peak / floats, "target": 1.1 / 32, "better": "lower"}]  # about 1.25 GB


def _write_streaming_task(folder: Path, gigabytes: float, features: int) -> None:
    """x.npy of `gigabytes` float32 rows and its labels (the argmax of 10 fixed random projections, a
    task to learn), written a chunk at a time; dev and test as small files beside it."""
    rows = int(gigabytes * 2**30) // (features * 4)
    projection = np.random.RandomState(0).randn(features, 10).astype(np.float32)
    generator = np.random.RandomState(1)
    for name, n in (("train", rows), ("dev", 2048), ("test", 2048)):
        x = np.lib.format.open_memmap(folder / f"{name}-x.npy", mode="w+", dtype=np.float32, shape=(n, features))
        y = np.lib.format.open_memmap(folder / f"{name}-y.npy", mode="w+", dtype=np.int64, shape=(n,))
        for start in range(0, n, 16384):
            chunk = generator.randn(min(16384, n - start), features).astype(np.float32)
            x[start : start + len(chunk)], y[start : start + len(chunk)] = chunk, (chunk @ projection).argmax(1)
        x.flush()
        y.flush()
        del x, y


def evicted(folder: Path) -> None:
    """The folder's .npy files dropped from the page cache (synced first, so their pages are clean):
    the streamed side then reads from the disk, as it would a file larger than memory."""
    for path in folder.glob("*.npy"):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def streaming_child(mode: str, where: str, count: str) -> dict:
    """One side of the streaming figure, run in its own process so that its peak resident memory is
    its own: the task of `where` streamed from its files, or loaded into memory as today's path; the
    arguments are a child process's command-line words."""
    folder, steps = Path(where), int(count)
    files = {split: [str(folder / f"{split}-x.npy"), str(folder / f"{split}-y.npy")]
             for split in ("train", "dev", "test")}
    task = ({"source": "lsmn_core.data.streaming:npy_files", "args": files, "classes": 10} if mode == "streamed" else
            {"source": "lsmn.bench:npy_arrays", "args": {"files": files}, "standardise": False})
    config = parse_config({"name": "bench", "tasks": [{"name": "big", **task}], "model": {"width": 256, "depth": 2},
                           "scheme": {"kind": "hard"}, "train": {"batch_size": 256, "device": "cpu"}})
    data = load_tasks(config.tasks, config.data)
    model = build_model([d.spec for d in data], config)
    session = TrainingSession(model, DeviceTasks(data, torch.device("cpu"), config), config, Reporter(None, quiet=True))
    session.train(Phase("warm-up", [0], 5, early_stopping=False))
    evicted(folder)  # the timed steps start from the disk, as a file larger than memory would
    start = time.perf_counter()
    session.train(Phase("train", [0], steps, early_stopping=False))
    seconds = (time.perf_counter() - start) / steps
    session.evaluate(0, "dev")
    # the peak of this process image (getrusage's ru_maxrss would carry the parent's over the exec)
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {"rows": data[0].spec.sizes["train"], "step_seconds": seconds,
            "peak_gb": int(status["VmHWM"].split()[0]) * 1024 / 1e9}


def npy_arrays(files: dict) -> dict:
    """The in-memory side's factory: the same files read whole into arrays."""
    return {split: (np.load(x), np.load(y)) for split, (x, y) in files.items()}


def bench_streaming(gigabytes: float = 2.0, features: int = 1024, steps: int = 400) -> list[dict]:
    """A task backed by a `gigabytes` memory-mapped .npy file, streamed through a DataLoader, against
    the same task loaded into memory (today's in-device path): peak resident memory of each, in its
    own process, and the time of one training step (batch 256, width 256, after a warm-up), the
    steps started with the files out of the page cache."""
    import json
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        _write_streaming_task(Path(tmp), gigabytes, features)
        sides = {}
        for mode in ("streamed", "in memory"):
            code = ("import json, sys; from lsmn.bench import streaming_child; "
                    "print(json.dumps(streaming_child(*sys.argv[1:])))")
            result = subprocess.run([sys.executable, "-c", code, mode, tmp, str(steps)], capture_output=True,
                                    text=True, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"the {mode} side of the streaming figure failed: "
                                   f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
            sides[mode] = json.loads(result.stdout.strip().splitlines()[-1])
    streamed, memory = sides["streamed"], sides["in memory"]
    size = f"{gigabytes:g} GB file ({streamed['rows']:,} rows x {features} float32 features)"
    return [
        {"name": f"streamed task, peak resident memory, a {size}", "value": streamed["peak_gb"], "unit": "GB",
         "baseline": f"budget 1 GB (the same task in memory: {memory['peak_gb']:.2f} GB)",
         "ratio": streamed["peak_gb"] / 1.0, "target": 1.0, "better": "lower"},
        {"name": f"streamed task, one training step (batch 256, width 256, DataLoader without workers), a {size}",
         "value": streamed["step_seconds"], "unit": "s",
         "baseline": f"in memory {memory['step_seconds'] * 1000:.1f} ms",
         "ratio": streamed["step_seconds"] / memory["step_seconds"], "target": 3.0, "better": "lower"}]


PAGE_BENCH_SCHEMES = {  # a scheme for each kind of page content: masks, signatures, expert usage
    "sparse": {"kind": "sparse", "prune_rate": 0.5, "min_density": 0.5, "round_steps": 2},
    "mixture": {"kind": "mixture", "templates": 4},
    "moe": {"kind": "moe", "experts": 4}}


def _page_bench_runs(folder: Path, configs: Path, n_tasks: int, depth: int) -> None:
    """Small but real runs of `n_tasks` of scale.yaml's tasks (in `configs`) with `depth` blocks, one
    per scheme in PAGE_BENCH_SCHEMES (a few steps: the pages' cost depends on the shapes, not on how
    well the runs trained)."""
    raw = load_yaml((configs / "scale.yaml").read_text())
    for name, scheme in PAGE_BENCH_SCHEMES.items():
        raw.update(name=f"pages-{name}", tasks=raw["tasks"][:n_tasks], model={"width": 32, "depth": depth},
                   scheme=scheme, train={"steps": 10, "eval_every": 10, "batch_size": 32, "device": "cpu"})
        train(parse_config(raw), folder, quiet=True)


def _render_pages(app: Path, run) -> dict[str, float]:
    """Seconds for each page's first render of `run` in the app at `app` (its main.py), in one
    session (Streamlit's AppTest: the script, the analysis and the figures; no browser)."""
    from streamlit.testing.v1 import AppTest  # the app's library, loaded only by this entry

    # AppTest outside a server: Streamlit notes a missing ScriptRunContext for every call
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(logging.ERROR)
    test = AppTest.from_file(str(app.resolve()), default_timeout=300)  # a relative path would be the caller's
    test.session_state["runs_folder"] = str(run.path.parent)
    test.session_state["run_select"] = run.label
    times = {}
    for page in ("overview", "masks", "signatures", "sharing", "attributions", "edit", "compare"):
        start = time.perf_counter()
        (test.run() if page == "overview" else test.switch_page(f"views/{page}.py").run())
        times[page] = time.perf_counter() - start
        if test.exception or test.error or run.id not in str(test.sidebar.selectbox(key="run_select").value):
            raise RuntimeError(f"app page {page} failed on run {run.id}")
    return times


def bench_app_pages(configs: Path, app: Path, n_tasks: int = 100, depth: int = 16) -> list[dict]:
    """Each page on fresh runs of 100 tasks x 16 layers (sparse, mixture, moe), after a warm-up on
    small runs of the same schemes (a server process imports its libraries and loads compiled
    kernels once)."""
    with tempfile.TemporaryDirectory() as warm, tempfile.TemporaryDirectory() as tmp:
        _page_bench_runs(Path(warm), configs, 5, 2)
        for run in list_runs(warm)[0]:
            _render_pages(app, run)
        _page_bench_runs(Path(tmp), configs, n_tasks, depth)
        times = {run.scheme: _render_pages(app, run) for run in list_runs(tmp)[0]}
    slowest = max(((run, page) for run in times for page in times[run]), key=lambda rp: times[rp[0]][rp[1]])
    each = "; ".join(f"{run}: " + ", ".join(f"{page} {seconds:.2f}" for page, seconds in pages.items())
                     for run, pages in times.items())
    value = times[slowest[0]][slowest[1]]
    return [{"name": f"app pages, first render (s), on runs of {n_tasks} tasks x {depth} layers: {each}",
             "value": value, "unit": "s", "baseline": f"target 1 s (slowest: {slowest[1]} of the {slowest[0]} run)",
             "ratio": value, "target": 1.0, "better": "lower"}]


SAMPLES = Path("sample_runs")


def bench_sample_pages(configs: Path, app: Path, samples: Path = SAMPLES, most_tasks: int = 10) -> list[dict]:
    """Each page's first render of every shipped sample run of at most `most_tasks` tasks (what a
    user opens first: the app lands on one), a session per run, after a warm-up on small runs."""
    with tempfile.TemporaryDirectory() as warm:
        _page_bench_runs(Path(warm), configs, 5, 2)
        for run in list_runs(warm)[0]:
            _render_pages(app, run)
    times = {run.id: _render_pages(app, run) for run in list_runs(samples)[0]
             if len(run.task_names) <= most_tasks and (run.path / "summary.json").is_file()}
    slowest = max(((run, page) for run in times for page in times[run]), key=lambda rp: times[rp[0]][rp[1]])
    value = times[slowest[0]][slowest[1]]
    each = "; ".join(f"{run} {max(pages.values()):.2f} ({max(pages, key=lambda p: pages[p])})"
                     for run, pages in times.items())
    return [{"name": f"app pages, first render (s), every page of the {len(times)} sample runs of at most "
                     f"{most_tasks} tasks, slowest page of each: {each}",
             "value": value, "unit": "s", "baseline": f"target 2 s (slowest: {slowest[1]} of {slowest[0]})",
             "ratio": value / 2.0, "target": 1.0, "better": "lower"}]


COLD_START = """import logging, sys, time
from streamlit.testing.v1 import AppTest
logging.disable(logging.WARNING)
test = AppTest.from_file(sys.argv[1], default_timeout=600)
test.run()
print(time.time(), flush=True)  # rendered: what follows (the process's exit) a server never pays
sys.exit(1 if test.exception or test.error or not test.title else 0)
"""


def bench_cold_start(app: Path, repeats: int = 3) -> list[dict]:
    """The landing page (Overview of the run the app opens on, from an empty user runs folder: a
    sample run) in a process started for it, from its start until the page is drawn: interpreter,
    Streamlit, torch and the app's imports, reading the run and drawing every figure, as the first
    page after a server starts. The median of `repeats` processes."""
    import statistics
    import subprocess
    import sys

    seconds = []
    with tempfile.TemporaryDirectory() as empty:
        for _ in range(repeats):
            start = time.time()
            result = subprocess.run([sys.executable, "-c", COLD_START, str(app.resolve())], capture_output=True,
                                    text=True, check=False, env={**os.environ, "LSMN_RUNS": empty})
            if result.returncode == 0:
                seconds.append(float(result.stdout.split()[-1]) - start)
            else:
                raise RuntimeError("the app's landing page failed in a cold process: "
                                   f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    value = statistics.median(seconds)
    return [{"name": f"app, first page after a cold start (s): a new process renders the landing page, median of "
                     f"{repeats} ({', '.join(f'{t:.1f}' for t in seconds)})",
             "value": value, "unit": "s", "baseline": "target 5 s", "ratio": value / 5.0, "target": 1.0,
             "better": "lower"}]


THOUSAND_TASKS_STEPS = ["name=pages-1000", "scheme.warmup_steps=2", "scheme.round_steps=1", "scheme.prune_rate=0.25",
                        "scheme.min_density=0.7", "train.steps=20", "train.eval_every=10",
                        "train.device=cpu"]  # scale-1000's tasks and shapes, a few steps (80 s on 2 cores)
THOUSAND_TASKS_BRIEFLY = [*THOUSAND_TASKS_STEPS, "model.width=16", "model.depth=2"]  # smaller still: tests of figures
TRAINED_THOUSAND = Path("sample_runs/scale-1000")  # where `lsmn samples --only scale-1000` builds the trained run


def bench_thousand_task_pages(configs: Path, app: Path, trained: Path = TRAINED_THOUSAND) -> list[dict]:
    """Each page's first render of the trained 1,000-task run at `trained` when it has been built
    (its masks, after 3,000 steps of pruning, have 57,000 distinct task sets), else of a run of
    configs/scale-1000.yaml trained for a few steps at its shapes, after a warm-up on small runs."""
    with tempfile.TemporaryDirectory() as warm, tempfile.TemporaryDirectory() as tmp:
        _page_bench_runs(Path(warm), configs, 5, 2)
        for run in list_runs(warm)[0]:
            _render_pages(app, run)
        if (trained / "summary.json").is_file():
            run, which = open_run(trained), f"the trained run {trained}"
        else:
            run = open_run(train(load_config(configs / "scale-1000.yaml", THOUSAND_TASKS_STEPS), tmp, quiet=True))
            which = f"a run of its shapes trained for 20 steps ({trained} is not built)"
        times = _render_pages(app, run)
    slowest = max(times, key=lambda page: times[page])
    each = ", ".join(f"{page} {seconds:.2f}" for page, seconds in times.items())
    return [{"name": f"app pages, first render (s), 1,000 tasks (configs/scale-1000.yaml), {which}: {each}",
             "value": times[slowest], "unit": "s", "baseline": f"target 2 s (slowest: {slowest})",
             "ratio": times[slowest] / 2.0, "target": 1.0, "better": "lower"}]


def run_benchmarks(device: str = "cpu", configs: Path = Path("configs"), app: Path = Path("app/main.py")) -> dict:
    """Every figure on the CPU; on a GPU (device "cuda") the ones that run on a device. The app
    pages' figure renders the app at `app` on runs of tasks from `configs`/scale.yaml."""
    if device == "cpu":
        return {"device": f"cpu ({torch.get_num_threads()} threads)",
                "results": bench_export() + bench_sparse_inference() + bench_masked_step() + bench_batched_imp()
                + bench_muir_generation() + bench_mixture_blocks() + bench_block_step() + bench_overlap_at_scale()
                + bench_streaming() + bench_app_pages(configs, app) + bench_sample_pages(configs, app)
                + bench_cold_start(app) + bench_thousand_task_pages(configs, app) + bench_pretrained()
                + bench_vectors()}
    return {"device": f"{device} ({torch.cuda.get_device_name(device)})",
            "results": bench_masked_step(device=device) + bench_masked_step_bf16(device=device)
            + bench_batched_imp(device=device)
            + bench_muir_generation(device=device) + bench_mixture_blocks(device=device)
            + bench_block_step(device=device)
            + bench_overlap_at_scale(device=device)}
