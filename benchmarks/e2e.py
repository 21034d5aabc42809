"""End to end against the original design, what each job pays to start, and one shard's read path.

    python -m benchmarks.e2e compare [--actions 200000 --users 20000 --places 5000] [--shards 1,2]
        [--repeat 3 --baseline-repeat 3] [--days 2] [--sync]
    python -m benchmarks.e2e startup [--rounds 7]
    python -m benchmarks.e2e shard [--actions 100000 --files-target 1000]
    python -m benchmarks.e2e s3-server [--files 765 --size 31000 --repeat 5]
    python -m benchmarks.e2e s3-client [--files 765 --size 31000 --repeat 5]

Everything runs on the local moto S3 server and embedded PostgreSQL; our pipeline runs through
local_stack.harness.run_batch with each job its own process, as Batch starts them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from benchmarks import report
from benchmarks.probes import AGE, JOBS
from benchmarks.services import REPO, Services, running

if TYPE_CHECKING:
    from witple_batch.run_layout import InputFile

BUCKET = "bench-e2e"

# ---------------------------------------------------------------------------------------------
# compare: ours against the original's cost profile


COMPARE = """Ours against the original design, same data, one run: where the time goes and the ratios.

(a) baseline with the original's cost profile, written from its README (not its code): files
    read one by one, parsed with json, aggregated in dicts, one sentence-transformers FP32
    encode call per user (a text of the user's actions) and per place, one INSERT .. ON
    CONFLICT per row with the vector as a float list; it runs on day 1's data, and its cost
    does not fall on day 2 (it re-encodes every user and place it sees);
(b) ours: plan, the shard children as processes (up to --shards at once), reduce, on day 1
    (empty database: every place embedded), day 2 (a second batch of the same size over the
    same users and places: shards reuse the stored content vectors) and, with --days N, the
    batches after it, each on top of the last;
(c) our stages, from the shard's log line and the reduce's report, start-up included: "start"
    is a process's age when its work begins (the `startup` subcommand times its parts).
The database holds the main server's sample place catalogue, as in production. Rounds
alternate the contenders; "paired" is the median of each round's ratio.
An hourly batch: --actions 50000 --users 4000 --places 2000 --shards 1 --repeat 3.
"""


def days(count: int) -> dict[str, tuple[str, int]]:
    """Each day's S3 prefix and generator seed: day N is the Nth batch on the same database."""
    return {f"day {n}": (f"user-actions/day{n}/", n) for n in range(1, count + 1)}


def baseline_text(category: str, place_id: str) -> str:
    """What the original embedded for a place: its category and id (it had no catalogue)."""
    return f"{category.replace('_', ' ')} place {place_id}"


def _baseline_read(client: Any, bucket: str, prefix: str) -> tuple[dict[str, list[str]], dict, int]:
    """Every file read one by one, parsed with json, aggregated in dicts: user texts, place counts, actions."""
    users: dict[str, list[str]] = {}
    places: dict[tuple[str, str], dict[str, int]] = {}
    actions = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            try:
                data = json.loads(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body)
            except (ValueError, OSError, EOFError):
                continue
            for record in data.get("actions", [data]) if isinstance(data, dict) else data:
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
    return users, places, actions


def _baseline_write(url: str, users: dict[str, list[str]], places: dict, vectors: tuple[dict, dict]) -> None:
    """One INSERT .. ON CONFLICT per row, the vector as a float list."""
    import psycopg

    user_vectors, place_vectors = vectors
    with psycopg.connect(url) as conn, conn.cursor() as cur:
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


def baseline(client: Any, bucket: str, url: str, threads: int, prefix: str) -> dict[str, float]:
    """The original's cost profile on the files under `prefix`: seconds per stage, and "actions"."""
    import torch
    from sentence_transformers import SentenceTransformer

    from export_model.cli import default_source

    torch.set_num_threads(threads)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    users, places, actions = _baseline_read(client, bucket, prefix)
    seconds["read + parse + aggregate"] = time.perf_counter() - started
    started = time.perf_counter()
    model = SentenceTransformer(str(default_source()), device="cpu", local_files_only=True)

    def encode(text: str) -> Any:
        return model.encode([text], show_progress_bar=False)[0]

    user_vectors = {uid: encode(" ".join(texts)) for uid, texts in users.items()}
    place_vectors = {
        key: encode(f"{baseline_text(*key)} likes {s['like']} bookmarks {s['bookmark']} clicks {s['click']}")
        for key, s in places.items()
    }
    seconds["embed (one call per user and place)"] = time.perf_counter() - started
    started = time.perf_counter()
    _baseline_write(url, users, places, (user_vectors, place_vectors))
    seconds["write (one statement per row)"] = time.perf_counter() - started
    return {**seconds, "actions": actions}


def baseline_total(seconds: dict[str, float]) -> float:
    """The baseline's seconds over its stages (its dict also carries the action count)."""
    return sum(v for k, v in seconds.items() if k != "actions")


def ours(env: dict[str, str], shards: int) -> dict[str, Any]:
    """Plan, the shard children (up to `shards` at once, as Batch would), reduce: seconds per job and stage."""
    from local_stack.harness import run_batch

    result = run_batch(env, shards=shards, processes=True, parallel=shards)
    return {
        "timings": result.seconds,
        "report": result.report,
        "plan": result.plan.get("seconds", {}),
        "shard": result.shard_seconds(),
        "neighbours": _logged_seconds(result.reduce_log, "place neighbours maintained"),
    }


def _logged_seconds(log: str, message: str) -> float:
    """The `seconds` of the reduce's log line `message` (0 when it did not log one)."""
    for line in log.splitlines():
        if line.startswith("{") and (record := orjson.loads(line)).get("msg") == message:
            return float(record["seconds"])
    return 0.0


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
    after = result.get("neighbours", 0.0)
    rows["reduce: report, notice, index, exit"] = result["timings"]["reduce"] - sum(reduce.values()) - after
    rows["reduce: place neighbours, after the notice"] = after
    return rows


def _sync_catalogue(services: Services, url: str, places: int, shards: int) -> None:
    """`coordinator sync` and its run on `shards` children at once: every catalogue place embedded."""
    from local_stack.harness import run_batch

    env = services.env(BUCKET, DATABASE_URL=url, BATCH_ID=f"sync-{shards}-{uuid.uuid4().hex[:6]}")
    per_child = -(-places // shards)
    synced = run_batch(env, sync=True, processes=True, parallel=shards, per_child=per_child, max_children=shards)
    seconds = sum(synced.seconds.values())
    print(
        f"catalogue sync before day 1, {shards} child(ren) at once: {synced.plan['places']:,} places in {seconds:.1f} s"
    )


def _days_of_ours(services: Services, args: argparse.Namespace, shards: int) -> dict[str, dict[str, Any]]:
    """Every day's batch on one fresh database holding the catalogue, each on top of the last (with --sync,
    after the catalogue sync, so day 1 starts with every catalogue place embedded)."""
    url = services.database(catalogue_places=args.places)
    if args.sync:
        _sync_catalogue(services, url, args.places, shards)
    runs = {}
    for day, (prefix, _) in days(args.days).items():
        batch = f"bench-{shards}-{uuid.uuid4().hex[:6]}"
        runs[day] = ours(services.env(BUCKET, S3_PREFIX=prefix, BATCH_ID=batch, DATABASE_URL=url), shards)
        report.progress(f"  ours, {shards} shard(s), {day}: {sum(runs[day]['timings'].values()):.1f} s")
    return runs


def _upload_days(services: Services, args: argparse.Namespace) -> int:
    """Each day's sample under its prefix; returns day 1's file count."""
    from local_stack.sample_data import generate

    files = {}
    for day, (prefix, seed) in days(args.days).items():
        start = datetime(2025, 1, 14, 14, tzinfo=UTC) + timedelta(days=seed)
        sample = generate(
            actions=args.actions, users=args.users, places=args.places, seed=seed, prefix=prefix, start=start
        )
        services.bucket(BUCKET, sample.files)
        files[day] = len(sample.files)
    return files["day 1"]


def _ours_label(shards: int, day: str) -> str:
    return f"(b) ours, {shards} shard{'s in parallel' if shards > 1 else ''}, {day}"


def _measure_compare(args: argparse.Namespace) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, float]], int]:
    """Rounds alternating ours (each shard count, every day) and the baseline: runs per label, baselines, files."""
    shard_counts = [int(n) for n in args.shards.split(",")]
    with running() as services:
        files = _upload_days(services, args)
        contenders: dict[str, Callable[[], Any]] = {
            f"ours {n}": lambda n=n: _days_of_ours(services, args, n) for n in shard_counts
        }

        def base() -> dict[str, float]:
            url = services.database()
            seconds = baseline(services.client, BUCKET, url, args.threads, days(1)["day 1"][0])
            report.progress(f"  (a) baseline: {baseline_total(seconds):.1f} s")
            return seconds

        contenders["baseline"] = base
        counts = {name: args.repeat for name in contenders} | {"baseline": args.baseline_repeat}
        measured = report.alternating(contenders, max(counts.values()), counts=counts)
    runs: dict[str, list[dict[str, Any]]] = {}
    for n in shard_counts:
        for by_day in measured[f"ours {n}"]:
            for day, result in by_day.items():
                runs.setdefault(_ours_label(n, day), []).append(result)
    return runs, measured["baseline"], files


def _ours_total(result: dict[str, Any]) -> float:
    return sum(result["timings"].values())


def _to_notice(result: dict[str, Any]) -> float:
    """The run's data committed and its notice sent: all but the neighbour counting after it."""
    return _ours_total(result) - result.get("neighbours", 0.0)


def _actions(result: dict[str, Any]) -> int:
    return result["report"]["stats"]["records_read"]


def _print_compare(args: argparse.Namespace, runs: dict[str, list[dict]], baselines: list[dict], files: int) -> dict:
    """The contenders' table and the stage tables; returns the figure's numbers."""
    first = next(iter(runs.values()))[0]["report"]["stats"]
    actions = first["records_read"]
    base_total = statistics.median([baseline_total(b) for b in baselines]) if baselines else float("nan")
    base_rate = actions / base_total
    print(
        f"data per day: {actions:,} actions, {files:,} files, {args.users:,} users, {args.places:,} places "
        f"({first['places']:,} met); medians of {args.repeat} run(s) of ours and {args.baseline_repeat} of the baseline"
    )
    rows = [["(a) baseline, original cost profile, day 1", f"{base_total:.1f}", f"{base_rate:,.0f}", "1.0x", ""]]
    rates = {"(a) baseline": base_rate}
    for label, results in runs.items():
        for name, total_of in ((label, _ours_total), (f"{label}, to its notice", _to_notice)):
            total = statistics.median([total_of(r) for r in results])
            rates[name] = _actions(results[0]) / total
            pairs = zip(results, baselines, strict=False)  # --repeat and --baseline-repeat may differ
            paired = [(_actions(r) / total_of(r)) / (actions / baseline_total(b)) for r, b in pairs]
            paired_cell = f"{statistics.median(paired):.1f}x" if paired else "-"
            rows.append([name, f"{total:.1f}", f"{rates[name]:,.0f}", f"{rates[name] / base_rate:.1f}x", paired_cell])
    report.table(["contender", "seconds", "actions/s", "vs (a)", "paired"], rows)
    print("(paired: the median of each round's ratio, ours against the baseline run of the same round)")
    base_stages = {k: statistics.median([b[k] for b in baselines]) for k in baselines[0]} if baselines else {}
    if base_stages:
        report.table(["stage", "seconds"], [[k, f"{v:.2f}"] for k, v in base_stages.items() if k != "actions"], "(a)")
    stages = {label: report.medians(_stage_samples(results)) for label, results in runs.items()}
    for label, results in runs.items():
        stats = results[0]["report"]["stats"]
        report.table(["stage", "seconds"], [[k, f"{v:.2f}"] for k, v in stages[label].items()], f"{label} (median)")
        print(f"content vectors reused {stats['places_reused']:,}, texts embedded {stats['texts_embedded']:,}")
    # "baseline": its stage medians, which `scale sizes --baseline-from` plots
    return {"actions": actions, "actions_per_second": rates, "baseline": base_stages, "ours_stages": stages}


def _stage_samples(results: list[dict[str, Any]]) -> dict[str, list[float]]:
    rows = [stage_rows(r) for r in results]
    return {stage: [row.get(stage, 0.0) for row in rows] for stage in rows[0]}


def compare(args: argparse.Namespace) -> None:
    if args.days < 1:
        sys.exit("--days must be at least 1")
    runs, baselines, files = _measure_compare(args)
    numbers = _print_compare(args, runs, baselines, files)
    figure, (plot,) = report.axes(size=(8, 1.5 + 0.4 * len(numbers["actions_per_second"])))
    labels = list(numbers["actions_per_second"])
    plot.barh(labels, [numbers["actions_per_second"][k] for k in labels])
    plot.invert_yaxis()
    plot.set(xlabel="actions/s, plan to report (medians)", title=f"{numbers['actions']:,} actions a day")
    report.write_figure(args.figures, "e2e", figure, numbers)


# ---------------------------------------------------------------------------------------------
# startup: what each job pays before its first file or row


STARTUP = """The start-up costs of the three jobs, named: what a process pays before its first file or row.

Each cost is timed on its own, in a fresh interpreter per job and round (a new process, as
Batch starts one), on the local services with a small planned batch, in the order each job
takes them: its imports, settings, S3 client, connection, migrations check (plan and reduce;
the schema is current, as on every run but the first), its shard plan or manifest read, and
for the shard the model's check, its libraries' import, its session and its GET process. The
interpreter itself (`python -c pass`, spawn to exit) is timed once per round. Steps run one
after another, so the overlaps the shard uses are not shown: it loads the model on its own
thread under its read, and its GET process starts once the shard has imported its command
line and runs its own imports under the rest of the shard's. Medians over rounds, in ms.
"""


def _probe_in_fresh_process(job: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.probes", "startup", job], cwd=REPO, capture_output=True)
    if done.returncode != 0:
        sys.exit(f"the {job} probe failed:\n{done.stderr.decode(errors='replace')}")
    return orjson.loads(done.stdout.splitlines()[-1])


def _interpreter_ms() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (time.perf_counter() - started) * 1000


def _measure_startup(rounds: int) -> dict[str, dict[str, list[float]]]:
    """Each job's steps per round, and the interpreter's under "interpreter"."""
    from local_stack.harness import plan
    from local_stack.sample_data import generate

    steps: dict[str, dict[str, list[float]]] = {job: {} for job in (*JOBS, "interpreter")}
    with running() as services:
        services.bucket(BUCKET, generate(actions=2_000, users=100, places=50).files)
        env = services.env(BUCKET, DATABASE_URL=services.database(), BATCH_ID=f"startup-{uuid.uuid4().hex[:6]}")
        os.environ.update(env)  # every probe below uses the local services and this batch
        plan(env, shards=1)
        for round_ in range(rounds):
            steps["interpreter"].setdefault("python -c pass", []).append(_interpreter_ms())
            for job in JOBS:
                for step, ms in _probe_in_fresh_process(job).items():
                    steps[job].setdefault(step, []).append(ms)
            report.progress(f"  round {round_ + 1}/{rounds} done")
    return steps


def startup(args: argparse.Namespace) -> None:
    samples = _measure_startup(args.rounds)
    python = statistics.median(samples.pop("interpreter")["python -c pass"])
    medians = {job: report.medians(samples[job]) for job in JOBS}
    ages = {job: medians[job].pop(AGE) for job in JOBS}
    print(f"start-up costs, ms, medians of {args.rounds} fresh processes per job (- : the job has no such step)")
    print(f"interpreter (python -c pass, spawn to exit; one figure for all three): {python:.0f}")
    names = dict.fromkeys(step for job in JOBS for step in medians[job])
    rows = [[step, *(f"{medians[job][step]:.0f}" if step in medians[job] else "-" for job in JOBS)] for step in names]
    rows.append(["sum with the interpreter", *(f"{python + sum(medians[job].values()):.0f}" for job in JOBS)])
    rows.append([f"({AGE})", *(f"{ages[job]:.0f}" for job in JOBS)])
    report.table(["step", *JOBS], rows)
    by_step = {step: {job: medians[job][step] for job in JOBS if step in medians[job]} for step in names}
    report.write_bars(args.figures, "startup", "start-up, ms (medians)", "ms", by_step)


# ---------------------------------------------------------------------------------------------
# shard, s3-server, s3-client: one shard's read path


SHARD = """One array child on one shard of generated data: throughput and peak RSS, then the GETs alone.

The whole run goes through the harness (plan, one child as its own process, reduce); the
child's figures come from the metrics.json it writes (peak RSS is its own VmHWM, its GET
process's added). Then the same files are fetched again by a GET process and nothing else, to
show how much of the read stage is the GETs rather than our parsing and validation.
"""


def _shard_metrics(services: Services, env: dict[str, str]) -> tuple[dict[str, Any], list[InputFile], float]:
    """One run of one shard: the child's metrics.json, its file list, and the array's wall seconds."""
    from local_stack.harness import run_batch
    from witple_batch.partials import METRICS_FILE
    from witple_batch.run_layout import RunLayout, load_shard_plan
    from witple_batch.settings import common_from_env

    result = run_batch(env, shards=1, processes=True)
    common = common_from_env(env)
    layout = RunLayout(common.work_bucket, common.work_prefix, env["BATCH_ID"])
    body = services.client.get_object(Bucket=common.work_bucket, Key=layout.shard_prefix(0) + METRICS_FILE)
    files = list(load_shard_plan(services.client, layout, 0, common.partials_key).files)
    return orjson.loads(body["Body"].read()), files, result.seconds["shards"]


def _gets_alone(env: dict[str, str], files: list[InputFile]) -> float:
    from shard_job.fetch_process import FetchProcess

    with FetchProcess.started({**os.environ, **env}) as reader:
        time.sleep(1.0)  # its imports done: the GETs alone are timed
        started = time.perf_counter()
        for _ in reader.fetch_in_order(env["AWS_REGION"], env["S3_BUCKET"], files, 16, 128 << 20):
            pass
        return time.perf_counter() - started


def shard(args: argparse.Namespace) -> None:
    from local_stack.sample_data import generate

    batch_size = max(1, args.actions // args.files_target)
    sample = generate(
        actions=args.actions, users=args.users, places=args.places, batch_size=batch_size, single_rate=0.0
    )
    with running() as services:
        services.bucket(BUCKET, sample.files)
        env = services.env(BUCKET, DATABASE_URL=services.database(), BATCH_ID=f"shard-{uuid.uuid4().hex[:6]}")
        metrics, files, wall = _shard_metrics(services, env)
        gets = _gets_alone(env, files)
    seconds = metrics["seconds"]
    print(
        f"files {metrics['files']:,}  actions {metrics['records_read']:,}  users {metrics['users']:,}  "
        f"places {metrics['places']:,}  texts embedded {metrics['texts_embedded']:,}"
    )
    report.table(
        ["stage", "seconds"],
        [["process wall (runner's)", f"{wall:.2f}"]] + [[stage, f"{value:.2f}"] for stage, value in seconds.items()],
    )
    print(
        f"files/s {metrics['files'] / wall:,.0f}   actions/s {metrics['records_read'] / wall:,.0f}   "
        f"texts/s (embed stage) {metrics['texts_embedded'] / max(seconds['embed'], 1e-9):,.0f}"
    )
    print(
        f"GETs alone (a GET process, 16 at once, no parsing): {gets:.2f}s = {metrics['files'] / gets:,.0f} "
        f"files/s; the read stage is {report.ratio(seconds['read'], gets)} that"
    )
    print(f"peak RSS {metrics['peak_rss_mb']:.0f} MiB (limit in the acceptance: 1024 MiB)")
    stages = {"read stage": {"seconds": seconds["read"]}, "GETs alone": {"seconds": gets}}
    report.write_bars(args.figures, "shard", f"one shard, {metrics['records_read']:,} actions", "s", stages)


S3_SERVER = """What the local S3 server costs per GET: moto's stock threaded server against local_stack's.

Each server runs in its own process, as in a local run (the shards are other processes), and
holds the same files; they are fetched with the shard's own fetcher (16 GETs in flight),
alternately from each server, --repeat times. Printed: medians of the wall time, the server's
CPU per GET (from /proc) and the client's, side by side, with the ratios.
"""
S3_CLIENT = """What our S3 client's timestamp parser saves: client CPU per GET and per listed key, against botocore's.

The local S3 server runs in its own process, so this process's CPU time is the client's
alone. Two clients with the same settings, one on botocore's default timestamp parser
(dateutil) and one as witple_batch.s3.s3_client makes them, fetch the same files with the
shard's fetcher (16 GETs in flight) and list them, alternately, --repeat times.
"""
SERVERS = ("moto stock", "local_stack")


def serve(kind: str) -> None:
    """Run one server until stdin closes, printing its endpoint first."""
    from local_stack.moto_s3 import MotoS3, free_port

    if kind == "local_stack":
        with MotoS3.start() as moto:
            print(moto.endpoint, flush=True)
            sys.stdin.read()
        return
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # as local_stack's: no line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print(f"http://127.0.0.1:{port}", flush=True)
    sys.stdin.read()
    server.stop()


def _server(kind: str) -> tuple[subprocess.Popen[str], Any]:
    """One server in a process of its own (it stops when its stdin closes), and a client of it holding the files."""
    from local_stack.moto_s3 import MotoS3
    from witple_batch.s3 import s3_client

    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.e2e", "s3-server", "--serve", kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert process.stdout is not None
    os.environ.update(MotoS3(endpoint=process.stdout.readline().strip(), _server=None).client_env())
    return process, s3_client(os.environ["AWS_REGION"])


def random_body(size: int) -> bytes:
    """`size` bytes of hex text, so nothing compresses them away."""
    return os.urandom(size // 2).hex().encode()


def _put_files(client: Any, count: int, body: bytes) -> list[InputFile]:
    """`count` objects holding `body`: the same body gives the same ETags on every server."""
    from local_stack.sample_data import ensure_bucket
    from witple_batch.run_layout import InputFile

    ensure_bucket(client, BUCKET, os.environ["AWS_REGION"])
    files = []
    for i in range(count):
        key = f"bench/file-{i:05d}.json"
        etag = client.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"].strip('"')
        files.append(InputFile(key=key, size=len(body), etag=etag))
    return files


def _fetch_all(client: Any, files: list[InputFile]) -> None:
    from shard_job.fetch import fetch_in_order

    for _item, data in fetch_in_order(client, BUCKET, files, 16, 64 << 20):
        assert isinstance(data, bytes)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _one_fetch(process: subprocess.Popen[str], client: Any, files: list[InputFile]) -> tuple[float, float, float]:
    """Wall seconds, the server's CPU seconds and this process's CPU seconds for one fetch of every file."""
    server, mine, started = _cpu_seconds(process.pid), time.process_time(), time.perf_counter()
    _fetch_all(client, files)
    return time.perf_counter() - started, _cpu_seconds(process.pid) - server, time.process_time() - mine


def s3_server(args: argparse.Namespace) -> None:
    if args.serve:
        serve(args.serve)
        return
    servers = dict(zip(SERVERS, (_server(kind) for kind in SERVERS), strict=True))
    try:
        body = random_body(args.size)
        files = {kind: _put_files(client, args.files, body) for kind, (_, client) in servers.items()}
        contenders = {kind: lambda kind=kind: _one_fetch(*servers[kind], files[kind]) for kind in SERVERS}
        runs = report.alternating(contenders, args.repeat)
    finally:
        for process, _client in servers.values():
            process.communicate("")
    print(f"{args.files} GETs of {args.size:,} B, 16 in flight, medians of {args.repeat}")
    scales = {"wall, s": 1.0, "server CPU per GET, ms": 1e3 / args.files, "client CPU per GET, ms": 1e3 / args.files}
    numbers = {
        label: {kind: statistics.median(run[field] for run in runs[kind]) * scale for kind in SERVERS}
        for field, (label, scale) in enumerate(scales.items())
    }
    rows = [[label, *(f"{v[k]:.2f}" for k in SERVERS), report.ratio(*v.values())] for label, v in numbers.items()]
    report.table(["", *SERVERS, "ratio"], rows)
    report.write_bars(args.figures, "s3_server", "the local S3 server, per GET", "s or ms", numbers)


def _client_cpu(client: Any, files: list[InputFile]) -> tuple[float, float]:
    """CPU ms per GET and per 1,000 listed keys, this process only."""
    started = time.process_time()
    _fetch_all(client, files)
    fetched = time.process_time()
    for _page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        pass
    listed = time.process_time()
    return (fetched - started) * 1e3 / len(files), (listed - fetched) * 1e6 / len(files)


def s3_client_cpu(args: argparse.Namespace) -> None:
    import boto3
    import botocore.session

    process, ours_client = _server("local_stack")
    try:
        session = boto3.session.Session(botocore_session=botocore.session.get_session())
        stock = session.client("s3", config=ours_client.meta.config)  # s3_client's settings, botocore's parser
        files = _put_files(ours_client, args.files, random_body(args.size))
        clients = {"botocore's parser": stock, "ours": ours_client}
        runs = report.alternating({n: lambda c=c: _client_cpu(c, files) for n, c in clients.items()}, args.repeat)
    finally:
        process.communicate("")
    print(f"{args.files} objects of {args.size:,} B, client CPU only, medians of {args.repeat}")
    numbers = {
        label: {name: statistics.median(run[field] for run in runs[name]) for name in clients}
        for field, label in enumerate(("per GET, ms", "per 1,000 listed keys, ms"))
    }
    rows = [[label, *(f"{v[n]:.3f}" for n in clients), report.ratio(*v.values())] for label, v in numbers.items()]
    report.table(["", *clients, "ratio"], rows)
    report.write_bars(args.figures, "s3_client", "S3 client CPU", "ms", numbers)


# ---------------------------------------------------------------------------------------------


def _read_path_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", type=int, default=765, help="as many as the 50k-action sample has")
    parser.add_argument("--size", type=int, default=31_000, help="bytes per file")
    parser.add_argument("--repeat", type=int, default=5)


def main(argv: list[str] | None = None) -> None:
    parser, sub = report.parser(__spec__.name, __doc__)
    run = report.command(sub, "compare", COMPARE, compare)
    run.add_argument("--actions", type=int, default=200_000)
    run.add_argument("--users", type=int, default=20_000)
    run.add_argument("--places", type=int, default=5_000)
    run.add_argument("--shards", default="1,2", help="shard counts to run, comma-separated")
    run.add_argument("--repeat", type=int, default=1, help="runs of ours per shard count (medians printed)")
    run.add_argument("--baseline-repeat", type=int, default=1, help="runs of the baseline (0: ours only)")
    run.add_argument("--threads", type=int, default=2, help="the baseline's PyTorch threads")
    run.add_argument("--days", type=int, default=2, help="batches in a row on one database (ours; >= 1)")
    run.add_argument("--sync", action="store_true", help="sync the catalogue before day 1 (not counted in its time)")
    run = report.command(sub, "startup", STARTUP, startup)
    run.add_argument("--rounds", type=int, default=7)
    run = report.command(sub, "shard", SHARD, shard)
    run.add_argument("--actions", type=int, default=100_000)
    run.add_argument("--users", type=int, default=20_000)
    run.add_argument("--places", type=int, default=5_000)
    run.add_argument("--files-target", type=int, default=1_000, help="about this many files")
    run = report.command(sub, "s3-server", S3_SERVER, s3_server)
    _read_path_arguments(run)
    run.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    run = report.command(sub, "s3-client", S3_CLIENT, s3_client_cpu)
    _read_path_arguments(run)
    report.run(parser, argv)


if __name__ == "__main__":
    main()
