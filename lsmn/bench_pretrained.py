"""`lsmn bench`'s figures of pretrained networks, each measured side by side in one run: the masked
forward of 6 tasks over all-MiniLM-L6-v2 against the dense forward of the same rows, a 6-task
Polytropon training step against one task's LoRA step on as many rows, the peak memory
of 6-task sparse and learned-mask runs against one fine-tune's (each in its own process), and the
data step of a second run against the first (tokenization cached).

The checkpoint is MiniLM where it is installed (`make models`); elsewhere a random one of its shapes
(BertConfig of its sizes) with a WordPiece vocabulary of WordNet's words, since speed and memory
depend on the shapes alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lsmn_core.config import parse_config
from lsmn_core.data.loading import load_tasks
from lsmn_core.datasets.wordnet import synsets
from lsmn_core.pretrained.models import named
from lsmn_core.pretrained.network import PretrainedNet
from lsmn_core.pretrained.text import tokenization
from lsmn_core.schemes import build_model
from lsmn_core.training.trainer import train

MINILM = "all-MiniLM-L6-v2"
TASKS = ["pos", "noun_lexname", "verb_lexname", "has_example", "pos", "noun_lexname"]


def checkpoint_folder(scratch: Path) -> tuple[Path, str]:
    """MiniLM's folder, or one of its shapes with random weights made in `scratch`; and which it is."""
    if (named(MINILM) / "config.json").is_file():
        return named(MINILM), MINILM
    from transformers import BertConfig, BertModel, BertTokenizer


    words = sorted({w.strip('.,;:()"`\'').lower() for g in synsets()[0][:20_000] for w in g.split()} - {""})
    folder = scratch / "minilm-shapes"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizer.from_pretrained(folder, local_files_only=True).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                         intermediate_size=1536)).save_pretrained(folder)
    return folder, "a random checkpoint of MiniLM's shapes (MiniLM is not installed)"


def _config(folder: Path, scheme: dict, tasks: list[str] = TASKS, steps: int = 20) -> dict:
    return {"name": "bench", "seed": 0,
            "tasks": [{"name": f"{t}{i}", "dataset": "wordnet", "target": t, "args": {"size": 300}}
                      for i, t in enumerate(tasks)],
            "model": {"pretrained": {"hf": str(folder)}}, "scheme": scheme,
            "train": {"steps": steps, "batch_size": 16, "eval_every": steps, "device": "cpu"},
            "data": {"max_length": 32}}


def bench_masked_forward(folder: Path, which: str, batch: int = 32, rounds: int = 5) -> list[dict]:
    """Six tasks' outputs, each through its own masks of every target weight (density 0.5), one batch
    of `batch` glosses each, against the checkpoint's dense forward of the same 6 x `batch` rows."""
    config = parse_config(_config(folder, {"kind": "sparse"}))
    data = load_tasks(config.tasks, config.data, tokenization(config, None))
    model = build_model([d.spec for d in data], config).eval()
    assert isinstance(model, PretrainedNet)
    generator = torch.Generator().manual_seed(0)
    model.body.load_routing({"masks": {n: torch.rand(m.shape, generator=generator) < 0.5
                                       for n, m in model.body.masks().items()}})
    x = torch.stack([torch.as_tensor(d.rows("train", batch)[0]) for d in data])  # [6, batch, L]
    attention = (x != data[0].spec.pad).long()
    network = model.network().module

    def masked():
        model.forward_tasks(x, list(range(len(data))))

    def dense():
        network(input_ids=x.flatten(0, 1), attention_mask=attention.flatten(0, 1))

    times: dict[str, list[float]] = {"masked": [], "dense": []}
    with torch.no_grad():
        masked(), dense()
        for _ in range(rounds):  # turns taken, so the machine's drift touches both alike
            for name, call in (("masked", masked), ("dense", dense)):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    masked_s, dense_s = sorted(times["masked"])[rounds // 2], sorted(times["dense"])[rounds // 2]
    return [{"name": f"pretrained masked forward, 6 tasks x {batch} glosses through their own masks ({which})",
             "value": masked_s, "unit": "s", "baseline": f"dense forward of the same rows {dense_s:.3f} s",
             "ratio": masked_s / dense_s, "target": 1.3, "better": "lower"}]


def _backward_step(model, x: torch.Tensor):
    """A forward of every task of `model` on its rows of x [tasks, rows, L], and the backward."""
    def step():
        loss = sum(out.float().pow(2).mean() for out in model.forward_tasks(x, list(range(len(x)))))
        loss.backward()
        model.zero_grad(set_to_none=True)
    return step


def bench_polytropon_step(folder: Path, which: str, rows: int = 48, rounds: int = 5) -> list[dict]:
    """A training step (forward and backward) of 6 tasks under Polytropon (K 4 skills of rank 2 on
    every target; 6 x rows / 6 glosses, allocations sampled) against one task's LoRA adapter (rank 8)
    on the same number of glosses."""
    steps = {}
    for name, scheme, tasks, each in (
            ("polytropon", {"kind": "mixture", "templates": 4, "adapter": {"lora": {"rank": 2, "alpha": 4}}}, TASKS,
             rows // len(TASKS)),
            ("lora", {"kind": "independent", "adapter": {"lora": {"rank": 8, "alpha": 16}}}, TASKS[:1], rows)):
        config = parse_config(_config(folder, scheme, tasks))
        data = load_tasks(config.tasks, config.data, tokenization(config, None))
        model = build_model([d.spec for d in data], config).train()
        x = torch.stack([torch.as_tensor(d.rows("train", each)[0]) for d in data])  # [tasks, each, L]
        steps[name] = _backward_step(model, x)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for call in steps.values():
        call()
    for _ in range(rounds):  # turns taken
        for name, call in steps.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    poly, lora = (sorted(times[n])[rounds // 2] for n in ("polytropon", "lora"))
    return [{"name": f"Polytropon training step, 6 tasks x {rows // len(TASKS)} glosses ({which})", "value": poly,
             "unit": "s", "baseline": f"one task's LoRA step on {rows} glosses {lora:.3f} s", "ratio": poly / lora,
             "target": 1.5, "better": "lower"}]


def run_child(folder: str, kind: str) -> dict:
    """One side of the memory figure, in its own process: a short run of `kind`; its peak resident
    memory (this process image's own, VmHWM)."""
    schemes: dict[str, tuple[dict, list[str]]] = {"one fine-tune": ({"kind": "independent"}, TASKS[:1]),
               "6-task sparse": ({"kind": "sparse", "prune_rate": 0.5, "min_density": 0.5, "round_steps": 4}, TASKS),
               "6-task learned masks": ({"kind": "sparse", "masks": "learned", "mask_steps": 4}, TASKS)}
    scheme, tasks = schemes[kind]
    with tempfile.TemporaryDirectory() as tmp:
        train(parse_config(_config(Path(folder), scheme, tasks, steps=8)), tmp, quiet=True)
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {"peak_gb": int(status["VmHWM"].split()[0]) * 1024 / 1e9}


CHILD = "import json, sys; from lsmn.bench_pretrained import run_child; print(json.dumps(run_child(*sys.argv[1:])))"


def bench_run_memory(folder: Path, which: str) -> list[dict]:
    """Peak resident memory of 6-task sparse and learned-mask runs against one fine-tune's, each run
    in a fresh process so that one's peak does not hide the next's."""
    peaks = {}
    for kind in ("one fine-tune", "6-task sparse", "6-task learned masks"):
        result = subprocess.run([sys.executable, "-c", CHILD, str(folder), kind], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"the {kind} side of the memory figure failed: "
                               f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
        peaks[kind] = json.loads(result.stdout.strip().splitlines()[-1])["peak_gb"]
    base = peaks["one fine-tune"]
    return [{"name": f"pretrained run, peak resident memory of a {kind} run ({which})", "value": peaks[kind],
             "unit": "GB", "baseline": f"one fine-tune {base:.2f} GB", "ratio": peaks[kind] / base, "target": 1.5,
             "better": "lower"} for kind in ("6-task sparse", "6-task learned masks")]


def bench_tokenization_cache(folder: Path, which: str, rows: int = 3000) -> list[dict]:
    """The data step of 6 text tasks (CSV files of `rows` WordNet glosses each, max_length 128),
    the first time (tokenized) and the second (read from the cache). The tokenizer is opened once
    before either, so the first does not pay for its import."""

    glosses, pos, _ = synsets()
    config_data = _config(folder, {"kind": "hard"})
    with tempfile.TemporaryDirectory() as scratch:
        for i, task in enumerate(config_data["tasks"]):
            picked = range(i * rows, (i + 1) * rows)
            lines = ["text,label", *(f'"{glosses[r].replace(chr(34), chr(39))}",{pos[r]}' for r in picked)]
            (Path(scratch) / f"t{i}.csv").write_text("\n".join(lines) + "\n")
            config_data["tasks"][i] = {"name": task["name"], "file": str(Path(scratch) / f"t{i}.csv"),
                                       "text": "text", "target": "label"}
        config = parse_config({**config_data, "data": {"max_length": 128}})
        tokenization(config, None)
        seconds = []
        for _ in range(2):
            start = time.perf_counter()
            load_tasks(config.tasks, config.data, tokenization(config, Path(scratch) / "cache"))
            seconds.append(time.perf_counter() - start)
    return [{"name": f"text data of 6 tasks x {rows} glosses, the second run's data step (tokenization cached; "
                     f"{which})", "value": seconds[1], "unit": "s", "baseline": f"first run {seconds[0]:.3f} s",
             "ratio": seconds[1] / seconds[0], "target": 0.1, "better": "lower"}]


def bench_pretrained() -> list[dict]:
    """The figures of pretrained runs, on MiniLM where it is installed."""
    with tempfile.TemporaryDirectory() as scratch:
        folder, which = checkpoint_folder(Path(scratch))
        return (bench_masked_forward(folder, which) + bench_polytropon_step(folder, which)
                + bench_run_memory(folder, which) + bench_tokenization_cache(folder, which))
