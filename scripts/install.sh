#!/usr/bin/env bash
# Create the virtual environment and install facebridge with exactly one onnxruntime and one (headless)
# OpenCV: the CPU flavour installs the `cpu` extra (onnxruntime), the GPU flavour the `gpu` extra
# (onnxruntime-gpu); both wheels provide the same `onnxruntime` package, so neither is a base dependency.
#
#   scripts/install.sh                    CPU, editable, with the development tools
#   FACEBRIDGE_GPU=1 scripts/install.sh   GPU: onnxruntime-gpu instead of onnxruntime
#   VENV=/opt/venv FACEBRIDGE_EXTRAS= FACEBRIDGE_EDITABLE=0 scripts/install.sh   what the Dockerfile runs
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip="$VENV/bin/python -m pip --disable-pip-version-check -q"
$pip install --upgrade pip
flavor=cpu
[ "${FACEBRIDGE_GPU:-0}" = "1" ] && flavor=gpu
extras=${FACEBRIDGE_EXTRAS-dev}
extras="${extras:+$extras,}$flavor"
editable="-e"
[ "${FACEBRIDGE_EDITABLE:-1}" = "0" ] && editable=""
$pip install $editable ".[$extras]"
# an environment made by an earlier version of this script may still hold insightface and its
# opencv-python / onnxruntime: remove what facebridge does not use, then restore the wanted wheels
stale=$($VENV/bin/python -m pip list --format=freeze 2>/dev/null | cut -d= -f1 | grep -ixE "insightface|opencv-python" || true)
if [ -n "$stale" ]; then
  $pip uninstall -y $stale >/dev/null
  $pip install --force-reinstall --no-deps "$($VENV/bin/python -c "import importlib.metadata as m; print('opencv-python-headless==' + m.version('opencv-python-headless'))")"
fi
if [ "$flavor" = gpu ] && $VENV/bin/python -m pip show onnxruntime >/dev/null 2>&1; then
  $pip uninstall -y onnxruntime >/dev/null
  $pip install --force-reinstall --no-deps "onnxruntime-gpu==$($VENV/bin/python -c "import importlib.metadata as m; print(m.version('onnxruntime-gpu'))")"
fi
$VENV/bin/python - <<'PY'
import importlib.metadata as m
names = {d.metadata["Name"].lower() for d in m.distributions()}
cv = sorted(n for n in names if n.startswith("opencv"))
ort = sorted(n for n in names if n.startswith("onnxruntime"))
assert cv == ["opencv-python-headless"], cv
assert len(ort) == 1, ort
import cv2, onnxruntime
print(f"installed: {cv[0]} {cv2.__version__}, {ort[0]} {onnxruntime.__version__} {onnxruntime.get_available_providers()}")
PY
touch "$VENV/.installed"
