#!/usr/bin/env bash
# README command (2): install what the tests need (idempotent) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# The web page is tested end to end in Debian's headless Chromium (driven by Playwright for Python).
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
  echo "test: installing Debian chromium for the browser test"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

export HF_HUB_OFFLINE=1 RAGAS_DO_NOT_TRACK=true OMP_WAIT_POLICY=passive

# Static checks first; any failure fails CI. RAGKIT_SKIP_CHECKS=1 skips them for a quick local rerun of some tests.
if [ "${RAGKIT_SKIP_CHECKS:-0}" != "1" ]; then
  echo "test: ruff check"
  .venv/bin/ruff check .
  echo "test: import contracts (lint-imports, [tool.importlinter] in pyproject.toml)"
  .venv/bin/lint-imports --no-cache
  echo "test: static types (mypy, [tool.mypy] in pyproject.toml)"
  .venv/bin/mypy
fi
exec .venv/bin/python -m pytest "$@"
