"""`lsmn bench`'s figures of task vectors over all-MiniLM-L6-v2 (or, where it is not installed, a
random checkpoint of its shapes, as bench_pretrained makes one): eight fine-tunes of the whole
network made beside it (the checkpoint plus seeded noise), then, measured side by side, the
streamed 8-way TIES and TSV-M merges against reading the nine weights files' bytes once; the overlap
counts of eight tasks' masks over every weight (the Masks page's report); the decompositions alone
that TSV-M cannot do without (its floor on this machine); and each merge's peak
memory, in its own process, against the checkpoint plus two fine-tunes and against the estimate
`lsmn merge` prints before it starts."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from analysis.overlap import overlap_report
from lsmn.bench_pretrained import checkpoint_folder
from lsmn_core.merges import MERGES
from lsmn_core.merges.matrix import by_singular_vectors, polar, top_triplets
from lsmn_core.merges.method import Recipe
from lsmn_core.schemes.vectors.inputs import TaskVectorSet, VectorInput
from lsmn_core.schemes.vectors.memory import merge_memory
from lsmn_core.schemes.vectors.writer import stream_merge

TASKS = 8
RECIPES = {"ties": Recipe("ties", 1.0, density=0.2), "tsv_m": Recipe("tsv_m", 1.0)}
TIME_TARGETS = {"ties": 3.0, "tsv_m": 5.0}  # x reading the weights files once


def make_finetunes(base: Path, scratch: Path, tasks: int = TASKS) -> list[Path]:
    """`tasks` copies of the checkpoint's folder with every floating tensor moved by seeded noise of
    1% of its own spread: fine-tunes of the whole network, as a merge tool is given them."""
    from transformers import AutoModel

    folders = []
    for task in range(tasks):
        model = AutoModel.from_pretrained(base, local_files_only=True)
        generator = torch.Generator().manual_seed(task)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.01 * parameter.std().nan_to_num())
        folders.append(scratch / f"finetune-{task}")
        model.save_pretrained(folders[-1], safe_serialization=True)
    return folders


def vector_set(base: Path, finetunes: list[Path]) -> TaskVectorSet:
    names = [n for n, p in load_file(str(base / "model.safetensors")).items() if p.is_floating_point()]
    inputs = [VectorInput(f.name, {str(f / "model.safetensors"): ""}, finetune=str(f)) for f in finetunes]
    return TaskVectorSet([base / "model.safetensors"], names, inputs)


def merge_once(base: Path, finetunes: list[Path], out: Path, method: str) -> None:
    vectors = vector_set(base, finetunes)
    stream_merge(vectors, RECIPES[method], torch.ones(len(finetunes), 1), dict.fromkeys(vectors.names, -1), out)


def bench_merge_time(base: Path, finetunes: list[Path], which: str, rounds: int = 3) -> list[dict]:
    files = [base / "model.safetensors", *(f / "model.safetensors" for f in finetunes)]
    times: dict[str, list[float]] = {"read": [], "svd": [], **{method: [] for method in RECIPES}}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(rounds):  # turns taken
            start = time.perf_counter()
            for file in files:
                file.read_bytes()
            times["read"].append(time.perf_counter() - start)
            for method in RECIPES:
                start = time.perf_counter()
                merge_once(base, finetunes, Path(out) / f"{method}.safetensors", method)
                times[method].append(time.perf_counter() - start)
            times["svd"].append(svd_floor(base))
    median = {k: sorted(v)[rounds // 2] for k, v in times.items()}
    return [{"name": f"an 8-way {method} merge of {which}, streamed into safetensors", "value": median[method],
             "unit": "s", "baseline": f"reading the 9 weights files once {median['read']:.2f} s",
             "ratio": median[method] / median["read"], "target": TIME_TARGETS[method], "better": "lower"}
            for method in RECIPES] + [
        {"name": f"the decompositions alone that an 8-way tsv_m merge of {which} takes (its floor here)",
         "value": median["svd"], "unit": "s", "baseline": f"reading the 9 weights files once {median['read']:.2f} s",
         "ratio": median["svd"] / median["read"], "target": TIME_TARGETS["tsv_m"], "better": "lower"}]


def svd_floor(base: Path, tasks: int = TASKS) -> float:
    """Seconds of the decompositions a TSV-M merge of `tasks` vectors cannot do without: for every
    weight matrix it factors, the tasks' top triplets in one batched call and the two polar factors,
    on random matrices of those shapes (float32, as the merge takes them)."""
    shapes = [tuple(p.shape) for n, p in load_file(str(base / "model.safetensors")).items()
              if p.is_floating_point() and by_singular_vectors(n, tuple(p.shape))]
    generator = torch.Generator().manual_seed(0)
    seconds = 0.0
    for m, n in shapes:
        rank = min(m, n)
        vectors, sides = torch.randn(tasks, m, n, generator=generator), [torch.randn(*side, generator=generator)
                                                                         for side in ((m, rank), (rank, n))]
        start = time.perf_counter()  # the decompositions only, not the drawing of their inputs
        top_triplets(vectors, rank // tasks)
        for side in sides:
            polar(side)
        seconds += time.perf_counter() - start
    return seconds


def bench_overlap_counts(base: Path, which: str) -> list[dict]:
    """Eight tasks' masks (a tenth of each tensor, seeded) over every weight: the overlap report's time."""
    shapes = {n: tuple(p.shape) for n, p in load_file(str(base / "model.safetensors")).items() if p.is_floating_point()}
    generator = np.random.default_rng(0)
    masks = {name: generator.random((TASKS, *shape), dtype=np.float32) < 0.1 for name, shape in shapes.items()}
    weights = sum(int(np.prod(s)) for s in shapes.values())
    times = []
    for _ in range(3):
        start = time.perf_counter()
        overlap_report(masks, [f"t{i}" for i in range(TASKS)], layers=dict.fromkeys(masks, 0))
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[1]
    return [{"name": f"overlap counts of 8 tasks' masks over every weight of {which} ({weights / 1e6:.1f}M)",
             "value": seconds, "unit": "s", "baseline": "target 1 s", "ratio": seconds, "target": 1.0,
             "better": "lower"}]


def merge_child(method: str, base: str, *finetunes: str) -> dict:
    """One 8-way merge in this process: its peak anonymous memory above what the process held before,
    sampled every millisecond (the weights files' pages that safetensors maps in are the page cache's,
    not the merge's, so the resident peak, which counts them, is not the figure), and the estimate."""
    def anonymous() -> int:
        status = Path("/proc/self/status").read_text()
        return int(status.split("RssAnon:", 1)[1].split()[0]) * 1024

    vectors = vector_set(Path(base), [Path(f) for f in finetunes])  # imports and first allocations, before the baseline
    estimate = merge_memory(vectors, MERGES.get(method)(), RECIPES[method], evaluate=False).writing
    before, peak, done = anonymous(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], anonymous())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with tempfile.TemporaryDirectory() as out:
            merge_once(Path(base), [Path(f) for f in finetunes], Path(out) / "merged.safetensors", method)
    finally:
        done.set()
        sampler.join()
    return {"above": peak[0] - before, "estimate": estimate}


CHILD = "import json, sys; from lsmn.bench_vectors import merge_child; print(json.dumps(merge_child(*sys.argv[1:])))"


def bench_merge_memory(base: Path, finetunes: list[Path], which: str, method: str) -> list[dict]:
    result = subprocess.run([sys.executable, "-c", CHILD, method, str(base), *map(str, finetunes)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the merge's memory figure failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    size = (base / "model.safetensors").stat().st_size
    allowed = size + 2 * (finetunes[0] / "model.safetensors").stat().st_size
    return [{"name": f"an 8-way {method} merge of {which}: peak anonymous memory above the process's own",
             "value": measured["above"] / 1e9, "unit": "GB",
             "baseline": f"the checkpoint and two fine-tunes {allowed / 1e9:.2f} GB",
             "ratio": measured["above"] / allowed, "target": 1.0, "better": "lower"},
            {"name": f"an 8-way {method} merge of {which}: its measured peak over the estimate lsmn merge prints",
             "value": measured["above"] / 1e9, "unit": "GB",
             "baseline": f"estimated {measured['estimate'] / 1e9:.3f} GB",
             "ratio": measured["above"] / measured["estimate"], "target": 1.0, "better": "lower"}]


def bench_vectors() -> list[dict]:
    """The figures of task vectors."""
    with tempfile.TemporaryDirectory() as scratch:
        base, which = checkpoint_folder(Path(scratch))
        finetunes = make_finetunes(base, Path(scratch))
        return (bench_merge_time(base, finetunes, which) + bench_overlap_counts(base, which)
                + [row for method in RECIPES for row in bench_merge_memory(base, finetunes, which, method)])
