#!/usr/bin/env bash
# The README's test command: set-up, lint, then the whole test suite on every core (TEST_WORKERS).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/bootstrap.sh"
cd "$root"
export MODEL_DIR=${MODEL_DIR:-$root/.cache/model}
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-auto}" --dist worksteal "$@"
