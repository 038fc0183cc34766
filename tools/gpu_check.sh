#!/usr/bin/env bash
# The GPU check of issue 18 on a machine with a GPU, PyTorch and nvcc but no package registry:
#   bash tools/gpu_check.sh [gpu_check options]      (from anywhere; OUT=folder, default $OUT or output/gpu_check)
# 1. installs what this Python lacks (python -m tools.gpu_check --list-missing) from ./gpu_wheels
#    (made by tools/gpu_wheels.sh) into $GPU_SITE, never touching torch;
# 2. builds semantic_sam._C with CUDA for this machine's GPU (TORCH_CUDA_ARCH_LIST from its capability);
# 3. runs python -m tools.gpu_check --output "$OUT" (extra arguments are passed on).
# Logs: $OUT/install.log, $OUT/build.log; results: $OUT/gpu_check.{json,md,log}.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/output/gpu_check}"
WHEELS="${GPU_WHEELS:-$ROOT/gpu_wheels}"
SITE="${GPU_SITE:-/tmp/semantic_sam_gpu_site}"
mkdir -p "$OUT" "$SITE"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  for candidate in python3 python; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import torch' 2>/dev/null; then PY="$candidate"; break; fi
  done
fi
[[ -n "$PY" ]] || { echo "error: no python with torch on PATH (set PYTHON)" >&2; exit 2; }
# the repository first: sal-detectron2's wheel also installs a top-level "tools" package
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SITE/bin:$PATH"
say() { echo "[gpu_check.sh $(date +%T)] $*"; }
say "python $("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available())')"

# 1. packages
missing="$("$PY" -m tools.gpu_check --list-missing 2>>"$OUT/install.log")"
if [[ -n "$missing" ]]; then
  say "installing from $WHEELS: $missing"
  # shellcheck disable=SC2086
  if ! "$PY" -m pip install --no-index --no-deps --find-links "$WHEELS" --target "$SITE" --upgrade $missing \
      >>"$OUT/install.log" 2>&1; then
    say "pip install failed (see install.log); trying one package at a time"
    for dist in $missing; do
      "$PY" -m pip install --no-index --no-deps --find-links "$WHEELS" --target "$SITE" "$dist" \
        >>"$OUT/install.log" 2>&1 || say "could not install $dist"
    done
  fi
  # detectron2's compiled ops target CPython 3.10 and another torch; the project never uses them
  rm -f "$SITE"/detectron2/_C*.so
  rm -rf "$SITE"/tools  # sal-detectron2's example scripts; it would shadow this repository's tools/
  still="$("$PY" -m tools.gpu_check --list-missing 2>>"$OUT/install.log")"
  [[ -z "$still" ]] || say "still missing: $still"
else
  say "nothing to install"
fi

# 2. semantic_sam._C with CUDA, for this GPU
arch="$("$PY" -c 'import torch; c = torch.cuda.get_device_capability(); print(f"{c[0]}.{c[1]}")' 2>/dev/null)"
if [[ -n "$arch" ]]; then
  if [[ -z "${CUDA_HOME:-}" ]]; then
    if [[ -x /usr/local/cuda/bin/nvcc ]]; then export CUDA_HOME=/usr/local/cuda
    elif command -v nvcc >/dev/null; then CUDA_HOME="$(dirname "$(dirname "$(command -v nvcc)")")"; export CUDA_HOME
    fi
  fi
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$arch}"
  say "building semantic_sam._C for sm_${arch/./} (CUDA_HOME=${CUDA_HOME:-unset}, nvcc $("${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" --version 2>/dev/null | grep -o 'release [0-9.]*'))"
  start=$SECONDS
  rm -f semantic_sam/_C*.so
  if FORCE_CUDA=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PY" setup.py build_ext --inplace >"$OUT/build.log" 2>&1; then
    say "built in $((SECONDS - start)) s: $(ls semantic_sam/_C*.so)"
  else
    say "build FAILED in $((SECONDS - start)) s: $(grep -m1 -iE 'error' "$OUT/build.log")"
  fi
else
  say "no GPU visible: not building the CUDA kernel"
fi

# 3. the check
device=cuda
[[ -n "$arch" ]] || device=cpu
say "running python -m tools.gpu_check --output $OUT --device $device $*"
"$PY" -m tools.gpu_check --output "$OUT" --device "$device" "$@"
status=$?
say "gpu_check exit $status"
cat "$OUT/gpu_check.md" 2>/dev/null | head -c 12000
exit $status
