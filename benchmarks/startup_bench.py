"""Every start-up cost of the three jobs, named: what a process pays before its first file or row.

    python -m benchmarks.startup_bench [--rounds 5]

The e2e stage table reports each job's start-up as one figure ("start": the process's age when
its work begins) and folds the connection, the migrations check and the reduce's manifest read
into neighbouring stages. Here each cost is timed on its own, in a fresh interpreter per job and
round (a new process, as Batch starts one), on the local moto S3 and embedded PostgreSQL with
a small planned batch: the interpreter itself (`python -c pass`, spawn to exit), the job's
imports, its settings, the S3 client, the connection, the migrations check (the schema is
current, as on every run but the first), the manifest or shard plan read, and for the shard the
model's check, its libraries' import and its session. Steps run one after another, so
overlaps the jobs use are not shown: the shard loads the model on its own thread under its
read, and starts its GET process before its own imports. Medians over rounds, in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUCKET, PREFIX = "bench-startup", "user-actions/"
JOBS = ("plan", "shard", "reduce")
AGE = "process age at the end"


def _timed(steps: dict[str, float], name: str, work: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = work()
    steps[name] = (time.perf_counter() - started) * 1000
    return result


def _settings(job: str) -> Any:
    """The job's settings, read and validated as the job reads them; their common part."""
    if job == "reduce":
        from reduce_job.config import reduce_config_from_env

        return reduce_config_from_env().common
    if job == "shard":
        from shard_job.config import shard_config_from_env

        return shard_config_from_env().common
    from witple_batch.config import common_from_env

    return common_from_env()


def probe(job: str) -> dict[str, float]:
    """Run in a fresh process: the job's start-up steps in the order the job takes them."""
    import importlib

    steps: dict[str, float] = {}
    modules = {
        "plan": ("shard_job.cli", "shard_job.plan"),
        "shard": ("shard_job.cli", "shard_job.fetch_process", "shard_job.child", "shard_job.config"),
        "reduce": ("reduce_job.cli", "reduce_job.config", "reduce_job.run"),
    }[job]
    _timed(steps, "imports", lambda: [importlib.import_module(m) for m in modules])

    # each job's own modules, all loaded by the imports step: nothing below imports anew
    from witple_batch.database import connect_for
    from witple_batch.run_layout import RunLayout, load_manifest, load_shard_plan
    from witple_batch.s3 import s3_client
    from witple_batch.schema import migrate

    common = _timed(steps, "settings", lambda: _settings(job))
    client = _timed(steps, "S3 client", lambda: s3_client(common.region))
    conn = _timed(steps, "connect", lambda: connect_for(common, "startup_bench"))
    with conn:
        _timed(steps, "migrations check", lambda: migrate(conn))
    layout = RunLayout(common.work_bucket, common.work_prefix, os.environ["BATCH_ID"])
    if job == "reduce":
        _timed(steps, "manifest read", lambda: load_manifest(client, layout, common.partials_key))
    if job == "shard":
        from witple_batch.model_files import verify_model_dir

        _timed(steps, "shard plan read", lambda: load_shard_plan(client, layout, 0, common.partials_key))
        model_dir = Path(os.environ["MODEL_DIR"])
        manifest = _timed(steps, "model check (hashes)", lambda: verify_model_dir(model_dir))
        _timed(steps, "model libraries import", lambda: importlib.import_module("witple_batch.embedder"))
        from witple_batch.embedder import Embedder

        _timed(steps, "model session", lambda: Embedder(model_dir, manifest=manifest))
    from witple_batch.resources import process_age_seconds

    steps[AGE] = process_age_seconds() * 1000  # a check on the sum: it counts the interpreter's start too
    return steps


def _interpreter_ms() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (time.perf_counter() - started) * 1000


def _probe_in_fresh_process(job: str) -> dict[str, float]:
    import orjson

    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.startup_bench", "--probe", job],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    return orjson.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--probe", choices=JOBS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        import orjson

        sys.stdout.write(orjson.dumps(probe(args.probe)).decode() + "\n")
        return

    from local_stack.moto_s3 import MotoS3
    from local_stack.postgres import LocalPostgres
    from local_stack.sample_data import ensure_bucket, generate, upload
    from witple_batch.s3 import s3_client

    with MotoS3.start() as moto, LocalPostgres.running() as pg:
        env = {
            **moto.client_env(),
            "S3_BUCKET": BUCKET,
            "S3_PREFIX": PREFIX,
            "DATABASE_URL": pg.new_database(),
            "BATCH_ID": f"startup-{uuid.uuid4().hex[:6]}",
            "MODEL_DIR": os.environ.get("MODEL_DIR", str(REPO / ".cache/model")),
        }
        os.environ.update(env)  # the clients below, and every process started, use the local services
        client = s3_client(env["AWS_REGION"])
        ensure_bucket(client, BUCKET, env["AWS_REGION"])
        upload(client, BUCKET, generate(actions=2_000, users=100, places=50, prefix=PREFIX).files)
        # a planned batch: the reduce reads its manifest, the shard its file list
        subprocess.run(
            [sys.executable, "-m", "shard_job", "plan", "--shards", "1"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        rows: dict[str, dict[str, list[float]]] = {job: {} for job in JOBS}
        interpreter: list[float] = []
        for round_ in range(args.rounds):
            interpreter.append(_interpreter_ms())
            for job in JOBS:
                for step, ms in _probe_in_fresh_process(job).items():
                    rows[job].setdefault(step, []).append(ms)
            print(f"  round {round_ + 1}/{args.rounds} done", flush=True)

    ages = [statistics.median(rows[job].pop(AGE)) for job in JOBS]
    steps = list(dict.fromkeys(step for job in JOBS for step in rows[job]))
    print(f"\nstart-up costs, ms, medians of {args.rounds} fresh processes per job (- : the job has no such step)")
    print(f"{'step':<26}" + "".join(f"{job:>10}" for job in JOBS))
    print(f"{'interpreter (spawn, exit)':<26}" + f"{statistics.median(interpreter):>10.0f}" * len(JOBS))
    for step in steps:
        cells = [statistics.median(rows[job][step]) if step in rows[job] else None for job in JOBS]
        print(f"{step:<26}" + "".join(f"{'-':>10}" if c is None else f"{c:>10.0f}" for c in cells))
    totals = [statistics.median(interpreter) + sum(statistics.median(v) for v in rows[job].values()) for job in JOBS]
    print(f"{'sum':<26}" + "".join(f"{t:>10.0f}" for t in totals))
    print(f"{'(process age at the end)':<26}" + "".join(f"{a:>10.0f}" for a in ages))


if __name__ == "__main__":
    main()
