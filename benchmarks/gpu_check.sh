#!/usr/bin/env bash
# placerl's GPU check on the GPU machine as it is (benchmarks/gpu_check.py says what each figure
# is): every stage on CUDA in bf16, then GRPO/DPO step time and update MFU, placerl's sampler vs
# model.generate, peak memory plain / LoRA / checkpointing, the planner's predicted vs measured
# GRPO step (on the specs, then on `placerl profile --device gpu`), on a ~0.5B Qwen2 shape. Each
# part is time-boxed, most important first; the whole fits 8 minutes on one H100. Nothing is downloaded:
# what placerl needs beyond the machine's image travels as wheels (benchmarks/device/wheels.sh
# here, then carry .gpu-wheels), installed with --no-index --no-deps --target when placerl's
# imports fail; torch is the one it finds. Figures (gpu_check.md: the one table; gpu_check.jsonl),
# the log (gpu_check.log), profile.json and plan*.json go to $OUT when set, else runs/gpu_check/.
#   benchmarks/gpu_check.sh                  # the check, on the visible GPU
#   benchmarks/gpu_check.sh --cpu --tiny     # the same route on a CPU, tiny model (the dry run)
# Extra arguments go to gpu_check.py (--help lists them). PYTHON picks the interpreter (python3),
# PLACERL_GPU_WHEELS the wheel folder, GPU_CHECK_BUDGET the seconds for all parts (460).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${OUT:-$ROOT/runs/gpu_check}"
mkdir -p "$DIR"
rm -f "$DIR"/{gpu_check.jsonl,gpu_check.md,profile.json,plan.json,plan_profiled.json}  # a rerun's own

PY="${PYTHON:-python3}"
CHECK="$ROOT/benchmarks/gpu_check.py"
WHEELS="${PLACERL_GPU_WHEELS:-$ROOT/.gpu-wheels}"
SITE="${PLACERL_GPU_SITE:-${TMPDIR:-/tmp}/placerl-gpu-site}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
PROBE='import pydantic, datasets, tensordict, placerl.config, placerl.stages, placerl.cli'
CPU=0; [[ " $* " == *" --cpu "* ]] && CPU=1
BUDGET="${GPU_CHECK_BUDGET:-460}"
SCALE=1; (( CPU )) && SCALE=6  # a shared CPU runs the tiny route slower than an H100 the real one
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PLACERL_PROFILE_DIR="$WORK/profiles"

status() {  # part figure value note: one line of gpu_check.jsonl (plain text, no quotes in it)
  printf '{"part": "%s", "figure": "%s", "value": "%s", "note": "%s"}\n' "$1" "$2" "$3" "${4:-}" \
    >>"$DIR/gpu_check.jsonl"
}

setup() {  # placerl importable with the torch found here; wheels installed where needed
  echo "# setup: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  "$PY" -c 'import torch; n = torch.cuda.device_count(); print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {n} GPU(s)" + "".join(f", {torch.cuda.get_device_name(i)}" for i in range(n)))' \
    || { echo "torch does not import with $PY"; return 2; }
  if "$PY" -c "$PROBE" 2>/dev/null; then
    echo "placerl's needs import as they are (no wheels installed)"
    status setup "(part)" "ok" "no wheels needed"
    return 0
  fi
  local wheels=("$WHEELS"/*.whl)
  if [[ ! -e "${wheels[0]}" ]]; then
    echo "placerl's needs do not import and $WHEELS holds no wheels: run benchmarks/device/wheels.sh where pip reaches PyPI, then carry .gpu-wheels"
    "$PY" -c "$PROBE" 2>&1 | tail -1
    status setup "(part)" "error" "no wheels in $WHEELS"
    return 2
  fi
  echo "placerl's needs do not import: installing ${#wheels[@]} wheels from $WHEELS into $SITE (--no-index --no-deps)"
  "$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}" || { status setup "(part)" "error" "pip install"; return 2; }
  export PYTHONPATH="$ROOT:$SITE${PYTHONPATH#"$ROOT"}"
  mkdir -p "$SITE/bin"  # `placerl` on PATH: this checkout's CLI, no install of the project
  printf '#!/bin/sh\nexec "%s" -m placerl.cli "$@"\n' "$(command -v "$PY")" >"$SITE/bin/placerl"
  chmod +x "$SITE/bin/placerl"
  export PATH="$SITE/bin:$PATH"
  "$PY" "$ROOT/benchmarks/device/wheels_check.py" installed --wheels "$WHEELS"
  if ! "$PY" -c "$PROBE"; then
    status setup "(part)" "error" "placerl does not import after the install"
    return 2
  fi
  status setup "(part)" "ok" "${#wheels[@]} wheels installed"
}

part() {  # name seconds [args]: gpu_check.py --part name under `timeout`, within the budget
  local name="$1" limit=$(( $2 * SCALE )) left=$(( BUDGET * SCALE - SECONDS )) start=$SECONDS rc=0
  shift 2
  (( limit > left )) && limit=$left
  if (( limit < 5 )); then
    echo "## $name: skipped: the time budget is spent"
    status "$name" "(part)" "skipped" "the ${BUDGET} s budget is spent"
    return
  fi
  timeout --kill-after=10 "$limit" "$PY" "$CHECK" --part "$name" --workdir "$WORK" --out "$DIR" "${ARGS[@]}" "$@" || rc=$?
  local took=$(( SECONDS - start )) figure="(part${*:+ $*})"
  if (( rc == 124 || rc == 137 )); then
    echo "## $name: timed out after ${limit} s (its figures so far are kept)"
    status "$name" "$figure" "timed out" "after ${limit} s; figures so far kept"
  elif (( rc )); then
    status "$name" "$figure" "exit $rc" "${took} s; the log says why"
  else
    status "$name" "$figure" "ok" "${took} s"
  fi
  (( rc == 0 )) || FAILED+=("$name")
}

run() {
  FAILED=()
  setup || return 2
  # most important first; seconds each on one H100 (x6 with --cpu), all within $BUDGET
  part model 45
  part stages 90
  part steps 80
  part generation 60
  part memory 80
  part ray 20
  part plan 25  # the planner on the H100's specs
  part profile 75
  part plan 25 --plan-after-profile  # and on the profile just measured
  "$PY" "$CHECK" --part table --workdir "$WORK" --out "$DIR" "${ARGS[@]}"
  echo "figures: $DIR/gpu_check.md (table), $DIR/gpu_check.jsonl; log: $DIR/gpu_check.log; $(( SECONDS )) s in all"
  if (( ${#FAILED[@]} )); then
    echo "FAILED parts: ${FAILED[*]}"
    return 1
  fi
}

ARGS=("$@")
run 2>&1 | tee "$DIR/gpu_check.log"
rc=${PIPESTATUS[0]}
rm -rf "$WORK"
exit "$rc"
