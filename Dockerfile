# facebridge service image (multi-stage, non-root, healthcheck).
#
# CPU (default):
#   docker build -t facebridge:cpu .
# GPU: onnxruntime-gpu 1.19+ wheels on PyPI are built for CUDA 12.x with cuDNN 9, hence this base:
#   docker build -t facebridge:gpu \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 --build-arg FLAVOR=gpu .
# Bake model files into the image (copied from ./models, sha256-verified) instead of mounting them:
#   docker build --build-arg BAKE_MODELS="arcface-mbf128 yunet" -t facebridge:cpu .
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG FLAVOR=cpu
ARG BAKE_MODELS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    DEBIAN_FRONTEND=noninteractive
# the CUDA base has no Python; python:3.11-slim has it and skips this
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY facebridge ./facebridge
# the wheel carries the manifest and the shipped bank as package data
COPY models/manifest.toml ./models/manifest.toml
COPY mappings ./mappings
COPY scripts/install.sh ./scripts/install.sh
RUN VENV=/opt/venv PYTHON=python3 FACEBRIDGE_EXTRAS=postgres FACEBRIDGE_EDITABLE=0 \
    FACEBRIDGE_GPU="$([ "$FLAVOR" = gpu ] && echo 1 || echo 0)" bash scripts/install.sh \
    && /opt/venv/bin/python -m pip uninstall -y pip setuptools wheel >/dev/null
COPY models ./models
RUN mkdir -p /opt/models && cp models/manifest.toml /opt/manifest.toml \
    && if [ -n "$BAKE_MODELS" ]; then \
         FACEBRIDGE_MANIFEST=/opt/manifest.toml \
         /opt/venv/bin/facebridge models fetch $BAKE_MODELS --from models --models-dir /opt/models; \
       fi

FROM ${BASE_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /srv/facebridge facebridge \
    && install -d -o facebridge -g facebridge -m 0700 /srv/facebridge/audit
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/manifest.toml /srv/facebridge/manifest.toml
COPY --from=build --chown=facebridge:facebridge /opt/models /srv/facebridge/models
COPY --chown=facebridge:facebridge mappings /srv/facebridge/mappings
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FACEBRIDGE_MANIFEST=/srv/facebridge/manifest.toml \
    FACEBRIDGE_MODELS_DIR=/srv/facebridge/models \
    FACEBRIDGE_MAPPINGS_DIR=/srv/facebridge/mappings \
    FACEBRIDGE_CACHE_DIR=/tmp/facebridge-cache \
    FACEBRIDGE_AUDIT_LOG=/srv/facebridge/audit/audit.log \
    FACEBRIDGE_HOST=0.0.0.0 \
    FACEBRIDGE_PORT=8000 \
    FACEBRIDGE_WORKERS=1
USER 10001:10001
WORKDIR /srv/facebridge
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FACEBRIDGE_PORT', '8000') + '/healthz', timeout=2)"]
CMD ["facebridge", "serve"]
