#!/usr/bin/env bash
# One set-up for every entry point: the venv, the pinned dependencies, the exported model.
# Cheap when nothing changed (a stamp of the pins, and export_model skips an up-to-date model).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "bootstrap: Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi

venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating $venv" >&2
  "$python" -m venv "$venv"
fi

stamp="$venv/.pins.sha256"
want=$(cat constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing pinned dependencies (constraints.txt)" >&2
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -c constraints.txt -e ".[shard,reduce,export,dev]"
  echo "$want" > "$stamp"
fi

# bytecode for our own modules, written even where PYTHONDONTWRITEBYTECODE is set: every job and test
# process imports them, and compiling them again in each costs more than the suite's slowest test
"$venv/bin/python" -m compileall -q -j 0 witple_batch coordinator shard_job reduce_job export_model local_stack

export MODEL_DIR=${MODEL_DIR:-$root/.cache/model}
"$venv/bin/python" -m export_model --output "$MODEL_DIR" >&2
