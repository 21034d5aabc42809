"""End to end against the original design, same data, one run: where the time goes and the ratios.

    .venv/bin/python benchmarks/e2e_bench.py [--actions 200000 --users 20000 --places 5000]
        [--shards 1,2] [--repeat 3 --baseline-repeat 3] [--days 2]

An hourly batch: --actions 50000 --users 4000 --places 2000 --shards 1 --repeat 3.

(a) baseline with the original's cost profile, written from its README (not its code):
    files read one by one, parsed with json, aggregated in dicts, one sentence-transformers
    FP32 encode call per user (a text of the user's actions) and per place, one
    INSERT .. ON CONFLICT per row with the vector as a float list;
(b) our pipeline: planner, shard children as processes (1 shard, then 2 in parallel), reduce,
    on day 1 (empty database: every place embedded) and then day 2 (a second batch of the
    same size over the same users and places: shards reuse the stored content vectors), and
    with --days N the batches after it, each on top of the last (histories grow);
(c) our stages, from the shard's log line and the reduce's report, start-up included: "start"
    is a process's age when its work begins (interpreter, imports, settings, clients;
    benchmarks/startup_bench.py times each of those parts).
The database holds the main server's place catalogue (the sample one), as in production.
All on the same local moto S3 server and embedded PostgreSQL. The baseline runs on day 1's
data; its cost does not fall on day 2 (it re-encodes every user and place it sees).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

from local_stack.array_runner import run_array
from local_stack.moto_s3 import MotoS3
from local_stack.postgres import LocalPostgres
from local_stack.sample_data import catalogue, ensure_bucket, generate, install_catalogue, upload
from witple_batch.run_layout import RunLayout, load_report
from witple_batch.s3 import s3_client
from witple_batch.settings import common_from_env

REPO = Path(__file__).resolve().parents[1]
BUCKET = "bench-e2e"


def days(count: int) -> dict[str, tuple[str, int]]:
    """Each day's S3 prefix and generator seed: day N is the Nth batch on the same database."""
    return {f"day {n}": (f"user-actions/day{n}/", n) for n in range(1, count + 1)}


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


def _shard_seconds(log_dir: Path) -> dict[str, float]:
    """The slowest shard's own stage seconds, from its "shard finished" log line (write and total included)."""
    shards = [
        orjson.loads(line)["seconds"]
        for log in sorted(log_dir.glob("shard-*.log"))
        for line in log.read_text().splitlines()
        if '"shard finished"' in line
    ]
    return max(shards, key=lambda seconds: seconds["start"] + seconds["total"], default={})


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
    log_dir = REPO / ".cache" / "bench" / env["BATCH_ID"]
    array = run_array(env, plan["shards"], shards, 1, log_dir)
    assert array.succeeded, array.failed
    timings["shards"] = array.seconds
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "reduce_job"], env={**os.environ, **env}, capture_output=True, check=True)
    timings["reduce"] = time.perf_counter() - started
    common = common_from_env(env)
    layout = RunLayout(common.work_bucket, common.work_prefix, env["BATCH_ID"])
    report = load_report(s3_client(env["AWS_REGION"]), layout)
    return {"timings": timings, "report": report, "plan": plan.get("seconds", {}), "shard": _shard_seconds(log_dir)}


# the shard's model loads on its own thread while it connects and reads; model_wait is what it cost
OVERLAPPED = ("model_load",)


def stage_rows(result: dict[str, Any]) -> dict[str, float]:
    """Every step of one run of ours as `job: stage` -> seconds; "other" is the job's wall time its stages leave."""
    rows = {f"plan: {k}": v for k, v in result["plan"].items()}
    rows["plan: other"] = result["timings"]["plan"] - sum(result["plan"].values())
    shard = dict(result["shard"])
    total = shard.pop("total", 0.0)
    worker = {k: shard.pop(k) for k in OVERLAPPED if k in shard}
    rows |= {f"shard: {k}": v for k, v in shard.items()}
    rows["shard: other"] = total + shard.get("start", 0.0) - sum(shard.values())
    rows["shard: process exit and runner"] = result["timings"]["shards"] - total - shard.get("start", 0.0)
    rows |= {f"  (own thread, under connect + read) {k}": v for k, v in worker.items()}
    reduce = result["report"]["seconds"]
    rows |= {f"reduce: {k}": v for k, v in reduce.items()}
    rows["reduce: report, notice, index, exit"] = result["timings"]["reduce"] - sum(reduce.values())
    return rows


def _paired_ratio(results: list[dict[str, Any]], baselines: list[dict[str, float]], actions: int) -> float:
    """The median over rounds of ours' actions/s against the same round's baseline run (nan without pairs)."""
    ratios = [
        (r["report"]["stats"]["records_read"] / sum(r["timings"].values())) / (actions / baseline_total(b))
        for r, b in zip(results, baselines, strict=False)
    ]
    return statistics.median(ratios) if ratios else float("nan")


def baseline_total(seconds: dict[str, float]) -> float:
    """The baseline's seconds over its stages (its dict also carries the action count)."""
    return sum(v for k, v in seconds.items() if k != "actions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--actions", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--places", type=int, default=5_000)
    parser.add_argument("--shards", default="1,2", help="shard counts to run, comma-separated")
    parser.add_argument("--repeat", type=int, default=1, help="runs of ours per contender (medians printed)")
    parser.add_argument("--baseline-repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--days", type=int, default=2, help="batches in a row on one database (ours; >= 1)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.days < 1:
        parser.error("--days must be at least 1")
    schedule = days(args.days)
    shard_counts = [int(n) for n in args.shards.split(",")]

    samples = {
        day: generate(
            actions=args.actions,
            users=args.users,
            places=args.places,
            seed=seed,
            prefix=prefix,
            start=datetime(2025, 1, 14, 14, tzinfo=UTC) + timedelta(days=seed),
        )
        for day, (prefix, seed) in schedule.items()
    }
    places = catalogue(args.places)
    runs: dict[str, list[dict[str, Any]]] = {}
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
        baselines = []
        # rounds alternate the contenders, so a machine that drifts over the run slows both alike
        for repeat in range(max(args.repeat, args.baseline_repeat)):
            for shards in shard_counts if repeat < args.repeat else ():
                database_url = pg.new_database()  # day 2 runs on top of day 1, as in production
                install_catalogue(database_url, places)  # the main server's place_recommendations
                for day, (prefix, _) in schedule.items():
                    env = {
                        **base,
                        "S3_PREFIX": prefix,
                        "BATCH_ID": f"bench-{shards}-{uuid.uuid4().hex[:6]}",
                        "DATABASE_URL": database_url,
                    }
                    label = f"(b) ours, {shards} shard{'s in parallel' if shards > 1 else ''}, {day}"
                    runs.setdefault(label, []).append(ours(env, shards))
                    seconds = sum(runs[label][-1]["timings"].values())
                    print(f"  run {repeat + 1}/{args.repeat}: {label}: {seconds:.1f} s", flush=True)
            if repeat < args.baseline_repeat:
                baselines.append(baseline(client, pg.new_database(), args.threads, schedule["day 1"][0]))
                seconds = baseline_total(baselines[-1])
                print(f"  run {repeat + 1}/{args.baseline_repeat}: (a) baseline: {seconds:.1f} s", flush=True)

    first = next(iter(runs.values()))[0]["report"]["stats"]
    actions = first["records_read"]
    # --baseline-repeat 0: ours only
    base_total = statistics.median([baseline_total(b) for b in baselines]) if baselines else float("nan")
    stages = baselines[0] if baselines else ()
    base_stages = {stage: statistics.median([b[stage] for b in baselines]) for stage in stages}
    print(
        f"\ndata per day: {actions:,} actions, {len(samples['day 1'].files):,} files, {args.users:,} users, "
        f"{args.places:,} places ({first['places']:,} met), catalogue of {len(places):,} places; "
        f"medians of {args.repeat} run(s) of ours and {args.baseline_repeat} of the baseline"
    )
    print(f"{'contender':<48}{'seconds':>10}{'actions/s':>12}{'vs (a)':>9}{'paired':>9}")
    label = "(a) baseline, original cost profile, day 1"
    print(f"{label:<48}{base_total:>10.1f}{actions / base_total:>12,.0f}{1:>8.1f}x")
    for label, results in runs.items():
        total = statistics.median([sum(r["timings"].values()) for r in results])
        rate = results[0]["report"]["stats"]["records_read"] / total
        paired = _paired_ratio(results, baselines, actions)
        print(f"{label:<48}{total:>10.1f}{rate:>12,.0f}{rate / (actions / base_total):>8.1f}x{paired:>8.1f}x")
    print("(paired: the median of each round's ratio, ours against the baseline run of the same round)")
    print("\n(a) stages (median):")
    for stage, value in base_stages.items():
        if stage != "actions":
            print(f"  {stage:<46}{value:>8.2f}s")
    for label, results in runs.items():
        rows = [stage_rows(r) for r in results]
        stats = results[0]["report"]["stats"]
        print(f"\n{label} stages (median):")
        for stage in rows[0]:
            print(f"  {stage:<46}{statistics.median([row.get(stage, 0.0) for row in rows]):>8.2f}s")
        print(f"  content vectors reused {stats['places_reused']:,}, texts embedded {stats['texts_embedded']:,}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "actions": actions,
                    "baseline": base_stages,  # median per stage (scaling_bench --baseline-from reads it)
                    "baseline_runs": baselines,
                    "ours": {
                        label: [{"timings": r["timings"], "stages": stage_rows(r)} for r in results]
                        for label, results in runs.items()
                    },
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
