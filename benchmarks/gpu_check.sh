#!/usr/bin/env bash
# placerl's GPU check: step time and MFU, generation tokens/s (placerl, HF, vLLM), sleep mode, peak memory, Flatten on Ray with
# NCCL, on a locally built ~0.5B Qwen2-shaped model in bf16 (benchmarks/gpu_check.py says what
# each figure is). Under 8 minutes on one H100/H200; nothing is downloaded.
#   benchmarks/gpu_check.sh                      # the check, on the visible GPU(s)
#   benchmarks/gpu_check.sh --cpu --tiny         # smoke test of the script on a CPU
# Extra arguments go to gpu_check.py (--help lists them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec timeout 480 python "$ROOT/benchmarks/gpu_check.py" "$@"
