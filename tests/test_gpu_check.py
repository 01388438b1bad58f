"""tools/gpu_check.sh, run dry where there is no GPU: every step runs and is recorded with its exit
status in one JSON summary (on a GPU the same script takes the figures)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import REPO


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: tools/gpu_check.sh would take its figures")
def test_the_gpu_script_runs_every_step_and_records_it(tmp_path):
    result = subprocess.run(["bash", "tools/gpu_check.sh", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "LSMN_PYTHON": sys.executable})
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert result.returncode == 0, result.stderr[-2000:]
    assert set(summary) >= {"gpu", "seconds", "test_cuda", "bench_cuda", "scale_1000"}
    assert summary["test_cuda"]["rc"] == 0  # collected, every test skipped without CUDA
    for refused in ("bench_cuda", "scale_1000"):  # no CUDA device: one clear line, exit 2
        assert summary[refused]["rc"] == 2
        assert "no CUDA device is available" in (tmp_path / f"{refused}.log").read_text()
