#!/usr/bin/env bash
# Idempotent environment setup: creates .venv and installs everything the project needs.
#   tools/setup.sh            # CPU (or GPU when CUDA is present: the CUDA op is built)
#   FORCE_CUDA=1 tools/setup.sh  # build the CUDA op even without a visible GPU (needs nvcc)
# Re-running is cheap: a stamp file records what was installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.semantic_sam_setup"
WHEELS="$ROOT/.wheels"

TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
D2_WHEEL="sal_detectron2-0.7.2-cp310-none-any.whl"
D2_SHA="491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"
PANOPTIC_WHEEL="panopticapi_lite-0.2.0-py3-none-any.whl"
PANOPTIC_SHA="58d3ffa842a72240162e7fa744c602a0a5320baabbdb3295d770374f4639b486"

want="$(cat requirements.txt pyproject.toml setup.py tools/setup.sh 2>/dev/null | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi

echo "[setup] creating $VENV" >&2
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

"${PIP[@]}" install $TORCH_SPEC
"${PIP[@]}" install -r requirements.txt

# detectron2 (upstream code in a wheel tagged cp310) and panopticapi, hashes checked.
mkdir -p "$WHEELS"
if [[ ! -f "$WHEELS/$D2_WHEEL" ]]; then
  "${PIP[@]}" download --no-deps --only-binary=:all: --python-version 3.10 -d "$WHEELS" sal-detectron2==0.7.2
fi
if [[ ! -f "$WHEELS/$PANOPTIC_WHEEL" ]]; then
  "${PIP[@]}" download --no-deps -d "$WHEELS" panopticapi-lite==0.2.0
fi
echo "$D2_SHA  $WHEELS/$D2_WHEEL" | sha256sum -c --quiet -
echo "$PANOPTIC_SHA  $WHEELS/$PANOPTIC_WHEEL" | sha256sum -c --quiet -
cp "$WHEELS/$D2_WHEEL" "$WHEELS/sal_detectron2-0.7.2-py3-none-any.whl"
"${PIP[@]}" install --no-deps "$WHEELS/sal_detectron2-0.7.2-py3-none-any.whl" "$WHEELS/$PANOPTIC_WHEEL"
# The wheel's compiled extension targets CPython 3.10 and cannot load here; we never use its ops.
"$VENV/bin/python" - <<'PY'
import glob, os, site
for sp in site.getsitepackages():
    for f in glob.glob(os.path.join(sp, "detectron2", "_C.cpython-310-*.so")):
        os.remove(f)
PY

# The project itself, editable. The CUDA op is built only when CUDA is usable or FORCE_CUDA=1.
"${PIP[@]}" install --no-build-isolation --no-deps -e .

echo "$want" > "$STAMP"
echo "[setup] done" >&2
