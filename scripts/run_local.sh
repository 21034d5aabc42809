#!/usr/bin/env bash
# The README's main command: set-up, then the whole batch locally on generated data.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/bootstrap.sh"
export MODEL_DIR=${MODEL_DIR:-$root/.cache/model}
exec "$root/.venv/bin/python" "$root/scripts/run_local.py" "$@"
