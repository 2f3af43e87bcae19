#!/usr/bin/env bash
# placerl's GPU check: step time and MFU, generation tokens/s (placerl, HF, vLLM), sleep mode, peak memory, Flatten on Ray with
# NCCL, on a locally built ~0.5B Qwen2-shaped model in bf16 (benchmarks/gpu_check.py says what
# each figure is), after the planner's GPU profile (under 2 minutes). Under 10 minutes on one
# H100/H200; nothing is downloaded.
#   benchmarks/gpu_check.sh                      # the check, on the visible GPU(s)
#   benchmarks/gpu_check.sh --cpu --tiny         # smoke test of the script on a CPU
# Extra arguments go to gpu_check.py (--help lists them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [[ " $* " != *" --cpu "* ]]; then  # the planner's GPU profile first (placerl profile --device gpu)
  timeout 120 python -c 'import sys; from placerl.cli import main; sys.exit(main(["profile", "--device", "gpu", "--force"]))' \
    || echo "placerl profile --device gpu failed (exit $?)"
fi
exec timeout 480 python "$ROOT/benchmarks/gpu_check.py" "$@"
