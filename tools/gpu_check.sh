#!/usr/bin/env bash
# The GPU check, one prepared script: install, run tests/test_cuda.py, `lsmn bench --device cuda`
# (the conv and attention rows and the bf16 step at T=64, width 4096 included) and the 1,000-task
# training (configs/scale-1000.yaml; its summary.json holds train_seconds), and write what each produced under OUT as files and one
# JSON summary. Made to finish within 8 minutes on one GPU; each step has its own time limit, and a
# step that fails or runs out of time is recorded, not fatal.
#
#   tools/gpu_check.sh [OUT]        (default: $OUT, else gpu-check/)
#
# It uses a Python whose torch already sees CUDA if there is one (python3, then .venv/bin/python);
# otherwise it makes .venv-gpu with requirements.txt, where pip's torch==2.13.0 for Linux is a CUDA build.
# Where no GPU is lent, `LSMN_PYTHON=.venv/bin/python tools/gpu_check.sh /tmp/x` checks the script itself:
# the CUDA tests skip and the bench refuses the missing device, each recorded with its exit status.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu-check}}
mkdir -p "$OUT"
started=$(date +%s)

cuda_python() {
  for candidate in python3 .venv/bin/python .venv-gpu/bin/python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

PY=${LSMN_PYTHON:-$(cuda_python)}  # LSMN_PYTHON: use this Python as it is (a dry run where there is no GPU)
if [ -z "$PY" ]; then
  echo "installing .venv-gpu" >&2
  timeout 300 python3 -m venv .venv-gpu >"$OUT/install.log" 2>&1 &&
    timeout 300 .venv-gpu/bin/pip install -q -r requirements.txt >>"$OUT/install.log" 2>&1
  PY=$(cuda_python) || { echo '{"error": "no Python whose torch sees CUDA"}' >"$OUT/summary.json"; exit 1; }
fi
"$PY" -m pip install -q --no-deps -e . >>"$OUT/install.log" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$OUT/gpu.txt" 2>&1

step() {  # name, time limit in seconds, command...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" >"$OUT/$name.out" 2>"$OUT/$name.log"
  echo "\"$name\": {\"rc\": $?, \"seconds\": $(( $(date +%s) - t0 ))}"
}

results=(
  "$(step test_cuda 90 "$PY" -m pytest -q tests/test_cuda.py)"
  "$(step bench_cuda 200 "$PY" -m lsmn bench --device cuda --json)"
  "$(step scale_1000 150 "$PY" -m lsmn train configs/scale-1000.yaml --out "$OUT/runs" --device cuda --quiet)"
)
{
  echo "{"
  echo "\"gpu\": \"$(head -1 "$OUT/gpu.txt" | tr -d '"')\", \"python\": \"$PY\", \"seconds\": $(( $(date +%s) - started )),"
  (IFS=,; echo "${results[*]}")
  echo "}"
} >"$OUT/summary.json"
cat "$OUT/summary.json"
