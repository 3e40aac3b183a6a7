#!/usr/bin/env bash
# README command (1): set up .venv, ingest the bundled sample corpus, then serve the API and web page on
# http://127.0.0.1:8000 (Ctrl-C stops it). Re-running skips what is already installed and ingested.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=passive
.venv/bin/rag ingest samples/corpus
exec .venv/bin/rag serve --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
