#!/usr/bin/env bash
# Create the virtual environment and install facebridge with one onnxruntime and a headless OpenCV.
#
# insightface declares `onnxruntime` and `opencv-python` as dependencies. Both OpenCV wheels write the
# same cv2 package, and onnxruntime / onnxruntime-gpu likewise share one package, so after the normal
# install this script removes the unwanted twin and reinstalls the wanted one over it.
#
#   scripts/install.sh            CPU: onnxruntime + opencv-python-headless
#   FACEBRIDGE_GPU=1 scripts/install.sh   GPU: onnxruntime-gpu instead of onnxruntime
#   VENV=/opt/venv FACEBRIDGE_EXTRAS= FACEBRIDGE_EDITABLE=0 scripts/install.sh   what the Dockerfile runs
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip="$VENV/bin/python -m pip --disable-pip-version-check -q"
$pip install --upgrade pip
extras=${FACEBRIDGE_EXTRAS-dev}
[ "${FACEBRIDGE_GPU:-0}" = "1" ] && extras="${extras:+$extras,}gpu"
editable="-e"
[ "${FACEBRIDGE_EDITABLE:-1}" = "0" ] && editable=""
$pip install $editable ".${extras:+[$extras]}"

opencv_version=$($VENV/bin/python -c "import importlib.metadata as m; print(m.version('opencv-python-headless'))")
$pip uninstall -y opencv-python opencv-python-headless >/dev/null
$pip install --no-deps "opencv-python-headless==$opencv_version"
if [ "${FACEBRIDGE_GPU:-0}" = "1" ]; then
  gpu_version=$($VENV/bin/python -c "import importlib.metadata as m; print(m.version('onnxruntime-gpu'))")
  $pip uninstall -y onnxruntime onnxruntime-gpu >/dev/null
  $pip install --no-deps "onnxruntime-gpu==$gpu_version"
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
