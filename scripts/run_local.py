"""Run the whole batch locally: moto S3, embedded PostgreSQL, webhook receiver, N shard processes, reduce.

Usage: scripts/run_local.sh [--actions 100000] [--shards N] [--keep] ...   (see --help)
Services already given by AWS_ENDPOINT_URL, DATABASE_URL or WEBHOOK_URL are used instead of
started. Everything started here is stopped on exit, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector

from local_stack.harness import RunResult, run_batch
from local_stack.moto_s3 import FAKE_CREDENTIALS, REGION, MotoS3
from local_stack.postgres import LocalPostgres
from local_stack.sample_data import CatalogueRow, catalogue, ensure_bucket, generate, install_catalogue, upload
from local_stack.webhook_receiver import WebhookReceiver
from witple_batch.logs import mask_secrets
from witple_batch.model_files import ModelError, verify_model_dir
from witple_batch.resources import available_cpus
from witple_batch.s3 import s3_client
from witple_batch.settings import new_run_id

REPO = Path(__file__).resolve().parents[1]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/run_local.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--actions", type=int, default=100_000, help="sample actions to generate (default 100000)")
    parser.add_argument("--users", type=int, default=20_000, help="distinct users in the sample (default 20000)")
    parser.add_argument("--places", type=int, default=5_000, help="distinct places in the sample (default 5000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed of the sample (default 42)")
    parser.add_argument("--no-seed", action="store_true", help="generate no data; process what is in the bucket")
    parser.add_argument("--shards", type=int, default=available_cpus(), help="array size (default: CPU count)")
    parser.add_argument("--parallel", type=int, default=available_cpus(), help="children at once (default: CPUs)")
    parser.add_argument("--attempts", type=int, default=3, help="attempts per child, as the job definition's")
    parser.add_argument("--batch-id", help="run id (default: generated)")
    parser.add_argument("--pg-data", type=Path, help="keep PostgreSQL data here across runs (default: temporary)")
    parser.add_argument("--keep", action="store_true", help="leave the services up and print how to connect")
    return parser.parse_args()


def ensure_model(env: dict[str, str]) -> None:
    try:
        verify_model_dir(Path(env["MODEL_DIR"]))
    except ModelError:
        say("exporting the int8 model (first run only)...")
        subprocess.run([sys.executable, "-m", "export_model", "--output", env["MODEL_DIR"]], check=True)


NAMED = "LEFT JOIN place_recommendations c ON c.table_name = p.place_category AND c.place_id::text = p.place_id"


def nearest_places(database_url: str, themes: dict[str, str]) -> list[str]:
    """The most active user's themes, then what its vector and recommend_places find for it."""
    with psycopg.connect(database_url) as conn:
        register_vector(conn)
        row = conn.execute(
            "SELECT user_id, behavior_vector FROM user_behavior_vectors WHERE behavior_vector IS NOT NULL "
            "ORDER BY total_actions DESC, user_id LIMIT 1"
        ).fetchone()
        if row is None:
            return []
        user, vector = row
        acted = conn.execute(
            f"SELECT c.name FROM user_place_interactions p {NAMED} WHERE p.user_id = %s", (user,)
        ).fetchall()
        nearest = conn.execute(
            f"SELECT p.place_category, p.place_id, c.name, 1 - (p.content_vector <=> %s) FROM place_vectors p {NAMED}"
            " ORDER BY p.content_vector <=> %s LIMIT 5",
            (vector, vector),
        ).fetchall()
        recommended = conn.execute(
            f"SELECT r.place_category, r.place_id, c.name, r.score FROM recommend_places(%s, 5) r"
            f" JOIN place_vectors p USING (place_category, place_id) {NAMED} ORDER BY r.score DESC, r.place_category,"
            " r.place_id",
            (user,),
        ).fetchall()
    counts: dict[str, int] = {}
    for (name,) in acted:
        counts[themes.get(name, "?")] = counts.get(themes.get(name, "?"), 0) + 1
    leaning = ", ".join(f"{theme} {n}" for theme, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    lines = [f"{user} acted on {len(acted)} places by theme: {leaning}"]
    for title, rows in (
        ("nearest places to its behaviour vector (pgvector, cosine)", nearest),
        ("recommend_places (not yet visited)", recommended),
    ):
        lines.append(f"{title}:")
        lines += [
            f"  {category:<15} {place_id:<8} {(name or '?')[:26]:<26} {themes.get(name, '?'):<9} {score:.3f}"
            for category, place_id, name, score in rows
        ]
    return lines


def start_services(services: ExitStack, args: argparse.Namespace) -> tuple[dict[str, str], WebhookReceiver | None]:
    """The run's settings, with moto S3, PostgreSQL and a webhook receiver started for those not given."""
    env = {k: v for k, v in os.environ.items() if k in ("AWS_ENDPOINT_URL", "DATABASE_URL", "WEBHOOK_URL")}
    env.update(
        BATCH_ID=args.batch_id or new_run_id(),
        S3_BUCKET=os.environ.get("S3_BUCKET", "user-actions-data"),
        S3_PREFIX=os.environ.get("S3_PREFIX", "user-actions/"),
        AWS_REGION=os.environ.get("AWS_REGION", REGION),
        MODEL_DIR=os.environ.get("MODEL_DIR", str(REPO / ".cache" / "model")),
        JOB_ATTEMPTS=str(args.attempts),
        AWS_BATCH_JOB_NAME="witple-local",
    )
    if "AWS_ENDPOINT_URL" not in env:
        moto = services.enter_context(MotoS3.start())
        env.update(moto.client_env())
        say(f"moto S3 server on {moto.endpoint}")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.setdefault(name, os.environ.get(name, FAKE_CREDENTIALS[name]))
    # the run key that signs plans and markers: yours, the moto stack's, or one for this run
    env.setdefault("PARTIALS_SECRET", os.environ.get("PARTIALS_SECRET") or secrets.token_hex(32))
    if "DATABASE_URL" not in env:
        pg = services.enter_context(LocalPostgres.running(args.pg_data))
        env["DATABASE_URL"] = pg.url
        say(f"PostgreSQL 18 + pgvector on {mask_secrets(pg.url)}")
    receiver = None
    if "WEBHOOK_URL" not in env:
        receiver = services.enter_context(WebhookReceiver.running())
        env["WEBHOOK_URL"] = receiver.url
        say(f"webhook receiver on {receiver.url}")
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    return env, receiver


def seed_sample(env: dict[str, str], args: argparse.Namespace, places: list[CatalogueRow]) -> float:
    """The catalogue as the main server's table and the sample's files in the bucket; returns seconds."""
    client = s3_client(env["AWS_REGION"])
    ensure_bucket(client, env["S3_BUCKET"], env["AWS_REGION"])
    if args.no_seed:
        return 0.0
    if install_catalogue(env["DATABASE_URL"], places):
        say(f"catalogue: {len(places):,} places in place_recommendations (the main server's table)")
    started = time.monotonic()
    sample = generate(
        actions=args.actions, users=args.users, places=args.places, seed=args.seed, prefix=env["S3_PREFIX"]
    )
    upload(client, env["S3_BUCKET"], sample.files)
    seconds = time.monotonic() - started
    say(f"uploaded {len(sample.files)} files ({sample.expected.actions:,} valid actions) in {seconds:.1f}s")
    return seconds


def run_jobs(env: dict[str, str], args: argparse.Namespace, label: str, **options: Any) -> RunResult:
    """One run through the harness as Batch would run it, with the children's progress shown."""
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        say(f"  {label} children done: {done}/{total}  ({time.monotonic() - started:.1f}s)")

    return run_batch(
        env,
        processes=True,
        parallel=args.parallel,
        attempts=args.attempts,
        log_dir=REPO / ".cache" / "runs" / env["BATCH_ID"],
        on_progress=progress,
        **options,
    )


def sync_rows(sync: RunResult) -> list[tuple[str, str]]:
    """The catalogue sync's own figures."""
    if not sync.plan["shards"]:
        return [("catalogue sync", "nothing to embed: every catalogue place is stored in this space")]
    assert sync.report is not None
    stats, seconds = sync.report["stats"], sum(sync.seconds.values())
    return [
        ("catalogue sync: places / children", f"{sync.plan['places']:,} / {sync.plan['shards']}"),
        ("catalogue sync: embedded / reused", f"{stats['texts_embedded']:,} / {stats['places_reused']:,}"),
        ("catalogue sync: seconds (places/s)", f"{seconds:.2f} ({sync.plan['places'] / seconds:,.0f})"),
    ]


def batch_rows(run: RunResult, timings: dict[str, float]) -> list[tuple[str, str]]:
    """The hourly run's figures: what it read, stored, reused and embedded, and how fast."""
    assert run.report is not None
    stats = run.report["stats"]
    wall = sum(run.seconds.values())
    return [
        ("batch", run.plan["batch_id"]),
        ("files (rejected)", f"{stats['files']:,} ({stats['files_rejected']:,})"),
        (
            "actions read / accepted / rejected",
            f"{stats['records_read']:,} / {stats['records_accepted']:,} / {stats['records_rejected']:,}",
        ),
        ("users / places / user-place pairs", f"{stats['users']:,} / {stats['places']:,} / {stats['pairs']:,}"),
        ("place vectors reused / embedded", f"{stats['places_reused']:,} / {stats['texts_embedded']:,}"),
        *((f"seconds: {stage}", f"{seconds:.2f}") for stage, seconds in {**timings, **run.seconds}.items()),
        ("actions/s (plan + shards + reduce)", f"{stats['records_read'] / wall:,.0f}"),
        ("actions/s (shards alone)", f"{stats['records_read'] / run.seconds['shards']:,.0f}"),
    ]


def main() -> int:
    args = parse_args()
    with ExitStack() as services:
        env, receiver = start_services(services, args)
        ensure_model(env)
        places = catalogue(args.places)
        timings = {"generate + upload": seed_sample(env, args, places)}
        try:  # the catalogue first, so the batch shows the steady state: every place already stored
            sync = run_jobs({**env, "BATCH_ID": f"{env['BATCH_ID']}-sync"}, args, "sync", sync=True)
            run = run_jobs(env, args, "shard", shards=args.shards)
        except RuntimeError as exc:
            say(str(exc))
            return 1
        plan = run.plan
        say(f"planned {plan['files']} files, {plan['bytes']:,} bytes into {plan['shards']} shards")
        if plan["shards"] == 0:
            say("nothing new to process")
            return 0
        assert run.log_dir is not None
        (run.log_dir / "reduce.log").write_text(run.reduce_log)
        rows = sync_rows(sync) + batch_rows(run, timings)
        if receiver is not None:
            statuses = [r.json["job_status"] for r in receiver.received]
            rows.append(("webhooks", ", ".join(statuses) or "none received"))
        width = max(len(k) for k, _ in rows)
        print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
        print("\n".join(nearest_places(env["DATABASE_URL"], {row.name: row.theme for row in places})))
        if args.keep:
            keep_serving(env)
    return 0


def keep_serving(env: dict[str, str]) -> None:
    """--keep: the services stay up, with how to reach them, until Ctrl-C."""
    say(
        f"\nservices are up. psql: {env['DATABASE_URL']}\nS3: AWS_ENDPOINT_URL={env['AWS_ENDPOINT_URL']} "
        f"aws s3 ls s3://{env['S3_BUCKET']}/\nruns: DATABASE_URL={env['DATABASE_URL']} "
        ".venv/bin/python -m reduce_job status\nCtrl-C stops them."
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        say("stopping")


def _stop_on_sigterm(_signum: int, _frame: object) -> None:
    """`kill` stops the services too, as Ctrl-C does (a background job ignores SIGINT)."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        say("interrupted; services stopped")
        sys.exit(130)
