#!/usr/bin/env bash
# Fill gpu_wheels/ (git-ignored) with the wheels tools/gpu_check.sh installs on a GPU machine without a
# package registry: every distribution of tools.gpu_check.PACKAGES at the version installed in .venv
# (python -m tools.gpu_check --wheel-spec). Pure-Python wheels serve any Python; the compiled ones are
# fetched for CPython 3.10-3.13 on Linux x86_64 (PY_VERSIONS="3.10 3.11 3.12 3.13"), so the GPU machine's
# Python must be one of those. detectron2 and panopticapi come from .wheels/ (tools/setup.sh) when there.
#   tools/gpu_wheels.sh [DIR]      prints what it gathered and the total size (33 wheels, about 18 MiB)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DIR="${1:-$ROOT/gpu_wheels}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
PY_VERSIONS="${PY_VERSIONS:-3.10 3.11 3.12 3.13}"
mkdir -p "$DIR"
PIP=("$PY" -m pip --disable-pip-version-check -q)

"$PY" -m tools.gpu_check --wheel-spec | while read -r spec compiled; do
  name="${spec%%==*}"
  case "$name" in
    sal-detectron2)  # tagged cp310 on PyPI; tools/setup.sh keeps a py3-tagged copy in .wheels/
      if [[ -f .wheels/sal_detectron2-0.7.2-py3-none-any.whl ]]; then cp .wheels/sal_detectron2-0.7.2-py3-none-any.whl "$DIR/"
      else
        "${PIP[@]}" download --no-deps --only-binary=:all: --python-version 3.10 -d "$DIR" "$spec"
        mv "$DIR"/sal_detectron2-0.7.2-cp310-none-any.whl "$DIR"/sal_detectron2-0.7.2-py3-none-any.whl
      fi
      continue ;;
    panopticapi-lite)
      if [[ -f .wheels/panopticapi_lite-0.2.0-py3-none-any.whl ]]; then cp .wheels/panopticapi_lite-0.2.0-py3-none-any.whl "$DIR/"; continue; fi ;;
  esac
  if [[ "$compiled" == 1 ]]; then
    for v in $PY_VERSIONS; do
      "${PIP[@]}" download --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --python-version "$v" -d "$DIR" "$spec" \
        || echo "warning: no $spec wheel for Python $v" >&2
    done
  else
    "${PIP[@]}" download --no-deps --only-binary=:all: -d "$DIR" "$spec" \
      || "${PIP[@]}" wheel --no-deps -w "$DIR" "$spec"
  fi
done
ls -la "$DIR" | awk 'NR > 1 && $1 ~ /^-/ {printf "%8.1f KiB  %s\n", $5 / 1024, $9}'
echo "total: $(du -sh "$DIR" | cut -f1) in $(ls "$DIR" | wc -l) files ($DIR)"
