"""lsmn bench's entries, at tiny sizes: the report format, and the side-by-side contenders agree
(the figures themselves come from `lsmn bench`, never from timed assertions here)."""

import tempfile
from pathlib import Path

import pytest

from lsmn import bench

ENTRIES = {
    "export": lambda: bench.bench_export(width=128, depth=2),
    "sparse inference": lambda: bench.bench_sparse_inference(width=128, depth=2, batch=4),
    "masked step": lambda: bench.bench_masked_step(sizes=((3, 32),), batch=4),
    "masked step, bf16": lambda: bench.bench_masked_step_bf16(n_tasks=3, width=32, batch=4, device="cpu"),
    "batched IMP": lambda: bench.bench_batched_imp(n_tasks=3, width=16, round_steps=2, repeats=1),
    "MUiR": lambda: bench.bench_muir_generation(n_tasks=3, width=32),
    "mixture": lambda: bench.bench_mixture_blocks(n_tasks=3, width=32, templates=2, batch=4),
    "overlap": lambda: bench.bench_overlap_at_scale(n_tasks=21, n_weights=80_000),
    "conv and attention blocks": lambda: bench.bench_block_step(task_counts=(2,), batch=2),
    "streaming": lambda: bench.bench_streaming(gigabytes=0.005, features=32, steps=3),
    "app pages": lambda: bench.bench_app_pages(Path("configs"), Path("app/main.py"), n_tasks=3, depth=2),
    "sample pages": lambda: bench.bench_sample_pages(Path("configs"), Path("app/main.py"), most_tasks=3),
    "cold start": lambda: bench.bench_cold_start(Path("app/main.py"), repeats=1),
    "Polytropon step": lambda: polytropon_step(),
}


def polytropon_step():
    from lsmn.bench_pretrained import bench_polytropon_step
    from tiny_models import hf_model

    with tempfile.TemporaryDirectory() as scratch:
        return bench_polytropon_step(hf_model(Path(scratch) / "bert"), "a tiny BERT", rows=12, rounds=1)


@pytest.mark.parametrize("entry", ENTRIES)
def test_bench_entries_follow_the_report_format(entry):
    results = ENTRIES[entry]()
    for r in results:
        assert set(r) == {"name", "value", "unit", "baseline", "ratio", "target", "better"}
        assert r["better"] in ("lower", "higher") and r["ratio"] > 0 and r["value"] > 0
    checks = {"export": "outputs bit-identical: True", "batched IMP": "masks equal to one-by-one: True",
              "overlap": "spot checks exact: True"}
    if entry in checks:
        assert all(checks[entry] in r["name"] for r in results if r["unit"] != "GB")


def test_bench_on_a_missing_gpu_says_so_and_exits_non_zero():
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: lsmn bench --device cuda would run the GPU suite")
    result = subprocess.run([sys.executable, "-m", "lsmn", "bench", "--device", "cuda"], capture_output=True,
                            text=True, check=False)
    assert result.returncode != 0 and "no CUDA device is available" in result.stderr
