"""End to end against the original design, same data, one run: where the time goes and the ratios.

    .venv/bin/python benchmarks/e2e_bench.py [--actions 200000 --users 20000 --places 5000]

(a) baseline with the original's cost profile, written from its README (not its code):
    files read one by one, parsed with json, aggregated in dicts, one sentence-transformers
    FP32 encode call per user (a text of the user's actions) and per place, one
    INSERT .. ON CONFLICT per row with the vector as a float list;
(b) our pipeline: planner, shard children as processes (1 shard, then 2 in parallel), reduce,
    on day 1 (empty database: every place embedded) and then day 2 (a second batch of the
    same size over the same users and places: shards reuse the stored content vectors);
(c) our stages, from the shards' metrics and the reduce's report.
All on the same local moto S3 server and embedded PostgreSQL. The baseline runs on day 1's
data; its cost does not fall on day 2 (it re-encodes every user and place it sees).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg

from local_stack.array_runner import run_array
from local_stack.moto_s3 import MotoS3
from local_stack.postgres import LocalPostgres
from local_stack.sample_data import ensure_bucket, generate, upload
from witple_batch.config import common_from_env
from witple_batch.run_layout import RunLayout, load_report
from witple_batch.s3 import s3_client

REPO = Path(__file__).resolve().parents[1]
BUCKET = "bench-e2e"
DAYS = {"day 1": ("user-actions/day1/", 1), "day 2": ("user-actions/day2/", 2)}  # S3 prefix, generator seed


def baseline_text(category: str, place_id: str) -> str:
    """What the original embedded for a place: its category and id (it had no catalogue)."""
    return f"{category.replace('_', ' ')} place {place_id}"


def baseline(client: Any, database_url: str, threads: int, prefix: str) -> dict[str, float]:
    import torch
    from sentence_transformers import SentenceTransformer

    from export_model.cli import default_source

    torch.set_num_threads(threads)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    users: dict[str, list[str]] = {}
    places: dict[tuple[str, str], dict[str, int]] = {}
    paginator = client.get_paginator("list_objects_v2")
    actions = 0
    for page in paginator.paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
            try:
                data = json.loads(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body)
            except (ValueError, OSError, EOFError):
                continue
            records = data.get("actions", [data]) if isinstance(data, dict) else data
            for record in records:
                try:
                    uid, cat, pid, kind = (
                        str(record[k]) for k in ("user_id", "place_category", "place_id", "action_type")
                    )
                except (KeyError, TypeError):
                    continue
                actions += 1
                users.setdefault(uid, []).append(f"{kind} {baseline_text(cat, pid)}")
                stats = places.setdefault((cat, pid), {"click": 0, "like": 0, "bookmark": 0})
                if kind in stats:
                    stats[kind] += 1
    seconds["read + parse + aggregate"] = time.perf_counter() - started

    started = time.perf_counter()
    model = SentenceTransformer(str(default_source()), device="cpu", local_files_only=True)
    user_vectors = {uid: model.encode([" ".join(texts)], show_progress_bar=False)[0] for uid, texts in users.items()}
    place_vectors = {
        key: model.encode(
            [f"{baseline_text(*key)} likes {s['like']} bookmarks {s['bookmark']} clicks {s['click']}"],
            show_progress_bar=False,
        )[0]
        for key, s in places.items()
    }
    seconds["embed (one call per user and place)"] = time.perf_counter() - started

    started = time.perf_counter()
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS base_users (user_id text PRIMARY KEY, behavior_vector real[], "
            "total_actions int, updated_at timestamptz)"
        )
        cur.execute(
            "CREATE TABLE IF NOT EXISTS base_places (place_id text, place_category text, "
            "content_vector real[], total_clicks int, updated_at timestamptz, PRIMARY KEY (place_id, place_category))"
        )
        for uid, vector in user_vectors.items():
            cur.execute(
                "INSERT INTO base_users VALUES (%s, %s, %s, now()) ON CONFLICT (user_id) DO UPDATE SET "
                "behavior_vector = EXCLUDED.behavior_vector, total_actions = base_users.total_actions + "
                "EXCLUDED.total_actions, updated_at = now()",
                (uid, vector.tolist(), len(users[uid])),
            )
        for (cat, pid), vector in place_vectors.items():
            cur.execute(
                "INSERT INTO base_places VALUES (%s, %s, %s, %s, now()) ON CONFLICT (place_id, place_category) "
                "DO UPDATE SET content_vector = EXCLUDED.content_vector, total_clicks = "
                "base_places.total_clicks + EXCLUDED.total_clicks, updated_at = now()",
                (pid, cat, vector.tolist(), places[(cat, pid)]["click"]),
            )
        conn.commit()
    seconds["write (one statement per row)"] = time.perf_counter() - started
    seconds["actions"] = actions
    return seconds


def ours(env: dict[str, str], shards: int) -> dict[str, Any]:
    """Plan, the shard children (up to `shards` at once, as Batch would), reduce: seconds per step and the report."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    planned = subprocess.run(
        [sys.executable, "-m", "shard_job", "plan", "--shards", str(shards)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    timings["plan"] = time.perf_counter() - started
    plan = orjson.loads(planned.stdout)
    array = run_array(env, plan["shards"], shards, 1, REPO / ".cache" / "bench" / env["BATCH_ID"])
    assert array.succeeded, array.failed
    timings["shards"] = array.seconds
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "reduce_job"], env={**os.environ, **env}, capture_output=True, check=True)
    timings["reduce"] = time.perf_counter() - started
    common = common_from_env(env)
    layout = RunLayout(common.work_bucket, common.work_prefix, env["BATCH_ID"])
    report = load_report(s3_client(env["AWS_REGION"]), layout)
    return {"timings": timings, "report": report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--actions", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--places", type=int, default=5_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    samples = {
        day: generate(
            actions=args.actions,
            users=args.users,
            places=args.places,
            seed=seed,
            prefix=prefix,
            start=datetime(2025, 1, 14 + seed, 14, tzinfo=UTC),
        )
        for day, (prefix, seed) in DAYS.items()
    }
    with MotoS3.start() as moto, LocalPostgres.running() as pg:
        os.environ.update(moto.client_env())
        client = s3_client(moto.client_env()["AWS_REGION"])
        ensure_bucket(client, BUCKET, moto.client_env()["AWS_REGION"])
        for sample in samples.values():
            upload(client, BUCKET, sample.files)
        base = {
            **moto.client_env(),
            "S3_BUCKET": BUCKET,
            "MODEL_DIR": os.environ.get("MODEL_DIR", str(REPO / ".cache/model")),
        }
        results: dict[tuple[int, str], dict[str, Any]] = {}
        for shards in (1, 2):
            database_url = pg.new_database()  # day 2 runs on top of day 1, as in production
            for day, (prefix, _) in DAYS.items():
                env = {
                    **base,
                    "S3_PREFIX": prefix,
                    "BATCH_ID": f"bench-{shards}-{uuid.uuid4().hex[:6]}",
                    "DATABASE_URL": database_url,
                }
                results[(shards, day)] = ours(env, shards)
        baseline_seconds = baseline(client, pg.new_database(), args.threads, DAYS["day 1"][0])

    actions = results[(1, "day 1")]["report"]["stats"]["records_read"]
    base_total = sum(v for k, v in baseline_seconds.items() if k != "actions")
    print(
        f"data per day: {actions:,} actions, {len(samples['day 1'].files):,} files, "
        f"{args.users:,} users, {args.places:,} places"
    )
    print(f"{'contender':<48}{'seconds':>10}{'actions/s':>12}{'vs (a)':>9}")
    print(
        f"{'(a) baseline, original cost profile, day 1':<48}{base_total:>10.1f}{actions / base_total:>12,.0f}{1:>8.1f}x"
    )
    for (shards, day), result in results.items():
        total = sum(result["timings"].values())
        day_actions = result["report"]["stats"]["records_read"]
        label = f"(b) ours, {shards} shard{'s in parallel' if shards > 1 else ''}, {day}"
        rate = day_actions / total
        print(f"{label:<48}{total:>10.1f}{rate:>12,.0f}{rate / (actions / base_total):>8.1f}x")
    print("\n(a) stages:")
    for stage, value in baseline_seconds.items():
        if stage != "actions":
            print(f"  {stage:<42}{value:>8.1f}s")
    for (shards, day), result in results.items():
        stats = result["report"]["stats"]
        print(
            f"\n(b) {shards} shard(s), {day} stages: "
            + ", ".join(f"{k} {v:.1f}s" for k, v in result["timings"].items())
        )
        print("  slowest shard per stage: " + ", ".join(f"{k} {v:.2f}s" for k, v in stats["shard_max_seconds"].items()))
        print(f"  content vectors reused {stats['places_reused']:,}, texts embedded {stats['texts_embedded']:,}")
        print("  reduce: " + ", ".join(f"{k} {v:.2f}s" for k, v in result["report"]["seconds"].items()))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "actions": actions,
                    "baseline": baseline_seconds,
                    "ours": {
                        f"{shards} shards, {day}": {"timings": v["timings"], "report_seconds": v["report"]["seconds"]}
                        for (shards, day), v in results.items()
                    },
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
