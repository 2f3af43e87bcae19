#!/usr/bin/env bash
# Prepares the trip to the GPU machine: downloads the wheels of benchmarks/device/wheels.txt
# (what placerl needs beyond the machine's image) into .gpu-wheels/ (git-ignored), checks that
# every need of each is met by the image or the list, and that the working tree plus the wheels
# stay well under the device tool's 64 MiB. Prints each wheel's size and the total.
#   benchmarks/device/wheels.sh                                  # cp312 manylinux x86_64, .gpu-wheels/
#   benchmarks/device/wheels.sh --python-version 3.11 --dest DIR # the dry run's (tests/test_gpu_check_dry_run.py)
# Then carry `.gpu-wheels` with the device tool and run benchmarks/gpu_check.sh there (README).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY_VERSION=3.12
DEST="$ROOT/.gpu-wheels"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --python-version) PY_VERSION="$2"; shift 2 ;;
    --dest) DEST="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "wheels.sh: unknown argument $1 (--python-version X.Y, --dest DIR)" >&2; exit 2 ;;
  esac
done
PYTHON="${PYTHON:-python3}"
ABI="cp${PY_VERSION/./}"
mapfile -t WANTED < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$HERE/wheels.txt")
FRESH="$(mktemp -d "${DEST%/}.XXXXXX")"
trap 'rm -rf "$FRESH"' EXIT
echo "downloading ${#WANTED[@]} wheels for CPython $PY_VERSION, manylinux x86_64 ..."
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$PY_VERSION" --implementation cp --abi "$ABI" \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  --dest "$FRESH" "${WANTED[@]}" 2> >(grep -v "^WARNING: Location" >&2)
"$PYTHON" "$HERE/wheels_check.py" closure --wheels "$FRESH" --python-version "$PY_VERSION"
rm -rf "$DEST" && mv "$FRESH" "$DEST"  # one version of each: a stale one would stop the install
trap - EXIT
echo "wheels in $DEST:"
"$PYTHON" "$HERE/wheels_check.py" sizes --wheels "$DEST" --root "$ROOT"
