#!/usr/bin/env bash
# The coordinator (`python -m coordinator submit`) run from a workstation, under its credentials. Against
# the deployed stack only with --dry-run: its work bucket takes writes from the stack's job and coordinator
# roles only, so there a run is started by hand by submitting the coordinator job (README: Deploying).
set -euo pipefail

usage() {
  cat <<'TXT'
usage: scripts/submit_array.sh [--dry-run] [--help] [-- PLAN_OPTIONS...]

Runs the coordinator the scheduled job runs, `python -m coordinator submit` (options after --
go to it, e.g. --shards 8, --max-records 50000 or --since 2025-01-15T00): it plans, then
  N = 0  submits nothing;
  N = 1  submits the shard job as a plain job (Batch arrays take 2 to 10,000 children);
  N > 1  submits an array job of size N;
then the reduce job depending on it, BATCH_ID passed as a container override; each job once
per BATCH_ID (run it again with the same BATCH_ID and it submits only what is missing).
Prints {"batch_id", "shards", "shard_job_id", "reduce_job_id", "submitted", ...}.

Settings (environment):
  JOB_QUEUE                required: the Batch job queue
  NAME_PREFIX              default witple-batch (job definitions <prefix>-shard, <prefix>-reduce)
  SHARD_JOB_DEFINITION     default <prefix>-shard;  REDUCE_JOB_DEFINITION default <prefix>-reduce
  BATCH_ID                 default: generated
  S3_BUCKET, S3_PREFIX, WORK_BUCKET, WORK_PREFIX, AWS_REGION, DATABASE_URL: read by the planner
  PYTHON                   default: .venv/bin/python if present, else python3

  --dry-run   plan without claiming or writing and print the submit_job calls instead of making them
TXT
}

args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) args+=(--dry-run) ;;
    -h|--help) usage; exit 0 ;;
    --) shift; args+=("$@"); break ;;
    *) echo "submit_array.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x "$root/.venv/bin/python" ]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
cd "$root"
exec "$python" -m coordinator submit "${args[@]}"
