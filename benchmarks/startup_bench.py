"""The start-up costs of the three jobs, named: what a process pays before its first file or row.

    python -m benchmarks.startup_bench [--rounds 7]

The e2e stage table reports each job's start-up as one figure ("start": the process's age when
its work begins) and folds the connection, the migrations check and the reduce's manifest read
into neighbouring stages. Here each cost is timed on its own, in a fresh interpreter per job and
round (a new process, as Batch starts one), on the local moto S3 and embedded PostgreSQL with
a small planned batch, in the order each job takes them: its imports, settings, S3 client,
connection, migrations check (plan and reduce; the schema is current, as on every run but the
first), its shard plan or manifest read, and for the shard the model's check, its libraries'
import, its session and its GET process. The interpreter itself (`python -c pass`, spawn to
exit) is timed once per round. Steps run one after another, so the overlaps the shard uses are
not shown: it loads the model (libraries and session) on its own thread under its read, and
its GET process, a second interpreter, starts once the shard has imported its command line
(boto3 included) and runs its own imports under the rest of the shard's. The probe's own
few standard-library imports (argparse, subprocess, statistics) load before its imports step.
Medians over rounds, in milliseconds.
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
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from witple_batch.settings import CommonConfig

REPO = Path(__file__).resolve().parents[1]
BUCKET, PREFIX = "bench-startup", "user-actions/"
JOBS = ("plan", "shard", "reduce")
AGE = "process age at the end"
MODULES = {
    "plan": ("shard_job.cli", "shard_job.plan"),
    "shard": ("shard_job.cli", "shard_job.fetch_process", "shard_job.child", "shard_job.config"),
    "reduce": ("reduce_job.cli", "reduce_job.config", "reduce_job.run"),
}
T = TypeVar("T")


def _timed(steps: dict[str, float], name: str, work: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = work()
    steps[name] = (time.perf_counter() - started) * 1000
    return result


def _settings(job: str) -> CommonConfig:
    """The job's settings, read and validated as the job reads them (modules already imported)."""
    if job == "reduce":
        from reduce_job.config import reduce_config_from_env

        return reduce_config_from_env().common
    if job == "shard":
        from shard_job.config import shard_config_from_env

        return shard_config_from_env().common
    from witple_batch.settings import common_from_env

    return common_from_env()


def probe(job: str) -> dict[str, float]:
    """Run in a fresh process: the job's start-up steps in the order the job takes them."""
    import importlib

    steps: dict[str, float] = {}
    _timed(steps, "imports", lambda: [importlib.import_module(m) for m in MODULES[job]])

    # loaded by every job's imports step above: these lines import nothing new
    from witple_batch.database import connect_for
    from witple_batch.run_layout import RunLayout, load_manifest, load_shard_plan
    from witple_batch.s3 import s3_client

    common = _timed(steps, "settings", lambda: _settings(job))
    client = _timed(steps, "S3 client", lambda: s3_client(common.region))
    layout = RunLayout(common.work_bucket, common.work_prefix, os.environ["BATCH_ID"])
    if job == "shard":
        from witple_batch.model_files import verify_model_dir  # imported by shard_job.child

        model_dir = Path(os.environ["MODEL_DIR"])
        manifest = _timed(steps, "model check (hashes)", lambda: verify_model_dir(model_dir))
        with _timed(steps, "connect", lambda: connect_for(common, "startup_bench")):
            _timed(steps, "shard plan read", lambda: load_shard_plan(client, layout, 0, common.partials_key))
        _timed(steps, "model libraries import", lambda: importlib.import_module("witple_batch.embedder"))
        from witple_batch.embedder import Embedder

        _timed(steps, "model session", lambda: Embedder(model_dir, manifest=manifest))
        _timed(steps, "GET process start-up", _get_process_start_up)
    else:
        from witple_batch.schema import migrate  # imported by shard_job.plan and reduce_job.run

        with _timed(steps, "connect", lambda: connect_for(common, "startup_bench")) as conn:
            _timed(steps, "migrations check", lambda: migrate(conn))
        if job == "reduce":
            _timed(steps, "manifest read", lambda: load_manifest(client, layout, common.partials_key))
    from witple_batch.resources import process_age_seconds

    steps[AGE] = process_age_seconds() * 1000  # a check on the sum: it counts the interpreter's start too
    return steps


def _get_process_start_up() -> None:
    """The shard's GET process: its interpreter and imports (its S3 client comes with the first request)."""
    subprocess.run([sys.executable, "-c", "import shard_job.fetch_process"], cwd=REPO, check=True)


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
    )
    if done.returncode != 0:
        sys.exit(f"the {job} probe failed:\n{done.stderr.decode(errors='replace')}")
    return orjson.loads(done.stdout.splitlines()[-1])


def _plan_a_batch(env: dict[str, str]) -> None:
    """Sample files in the local S3 and a planned batch: the reduce reads its manifest, the shard its file list."""
    from local_stack.sample_data import ensure_bucket, generate, upload
    from witple_batch.s3 import s3_client

    client = s3_client(env["AWS_REGION"])
    ensure_bucket(client, BUCKET, env["AWS_REGION"])
    upload(client, BUCKET, generate(actions=2_000, users=100, places=50, prefix=PREFIX).files)
    subprocess.run(
        [sys.executable, "-m", "shard_job", "plan", "--shards", "1"], cwd=REPO, capture_output=True, check=True
    )


def _measure(rounds: int) -> tuple[list[float], dict[str, dict[str, list[float]]]]:
    """Interpreter milliseconds per round, and each job's steps per round."""
    from local_stack.moto_s3 import MotoS3
    from local_stack.postgres import LocalPostgres

    interpreter: list[float] = []
    steps: dict[str, dict[str, list[float]]] = {job: {} for job in JOBS}
    with MotoS3.start() as moto, LocalPostgres.running() as pg:
        env = {
            **moto.client_env(),
            "S3_BUCKET": BUCKET,
            "S3_PREFIX": PREFIX,
            "DATABASE_URL": pg.new_database(),
            "BATCH_ID": f"startup-{uuid.uuid4().hex[:6]}",
            "MODEL_DIR": os.environ.get("MODEL_DIR", str(REPO / ".cache/model")),
        }
        os.environ.update(env)  # every client and process below uses the local services
        _plan_a_batch(env)
        for round_ in range(rounds):
            interpreter.append(_interpreter_ms())
            for job in JOBS:
                for step, ms in _probe_in_fresh_process(job).items():
                    steps[job].setdefault(step, []).append(ms)
            print(f"  round {round_ + 1}/{rounds} done", flush=True)
    return interpreter, steps


def _print_table(rounds: int, interpreter: list[float], steps: dict[str, dict[str, list[float]]]) -> None:
    ages = {job: statistics.median(steps[job].pop(AGE)) for job in JOBS}
    medians = {job: {step: statistics.median(values) for step, values in steps[job].items()} for job in JOBS}
    python = statistics.median(interpreter)
    print(f"\nstart-up costs, ms, medians of {rounds} fresh processes per job (- : the job has no such step)")
    print(f"interpreter (python -c pass, spawn to exit; one figure for all three): {python:.0f}")
    print(f"{'step':<26}" + "".join(f"{job:>10}" for job in JOBS))
    for step in dict.fromkeys(step for job in JOBS for step in medians[job]):
        cells = [medians[job].get(step) for job in JOBS]
        print(f"{step:<26}" + "".join(f"{'-':>10}" if c is None else f"{c:>10.0f}" for c in cells))
    print(f"{'sum with the interpreter':<26}" + "".join(f"{python + sum(medians[j].values()):>10.0f}" for j in JOBS))
    print(f"{'(' + AGE + ')':<26}" + "".join(f"{ages[job]:>10.0f}" for job in JOBS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--probe", choices=JOBS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        import orjson

        sys.stdout.write(orjson.dumps(probe(args.probe)).decode() + "\n")
        return
    interpreter, steps = _measure(args.rounds)
    _print_table(args.rounds, interpreter, steps)


if __name__ == "__main__":
    main()
