#!/usr/bin/env bash
# The GPU check (issue 12, deliverable 8), on a machine with an NVIDIA GPU, PyTorch and
# transformers; no network, no hub, no vLLM needed. Under 8 minutes on one H100:
#   - a Llama-3-8B-shaped model with random bf16 weights, built on the GPU from a config;
#   - tokens/s of a plain model.generate loop and of llmeval's hf backend, same prompts,
#     the h100 preset's batch (64), greedy, 256 new tokens;
#   - eval-generate --preset h100 end to end, with eval-monitor --once --json snapshots
#     showing the GPU through NVML while it runs.
# Everything measured goes to OUT_DIR (results.json, summary.md, monitor-*.json*, ...).
#
#   bench/gpu_check.sh [OUT_DIR] [extra gpu_check.py flags, e.g. --prompts 64 --max-tokens 128]
#   GPU_CHECK_CPU=1 bench/gpu_check.sh OUT_DIR   # a dry run on the CPU with a two-layer model
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check-out}
shift || true
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"
if [ -n "${GPU_CHECK_CPU:-}" ]; then
  set -- --device cpu --tiny --prompts 6 --max-tokens 8 --batch-size 4 --monitor-every 0.5 "$@"
fi
# 8 minutes at most: a check that hangs must still leave what it measured.
exec timeout --kill-after=20 "${GPU_CHECK_TIMEOUT:-470}" "$py" bench/gpu_check.py --out "$out" "$@"
