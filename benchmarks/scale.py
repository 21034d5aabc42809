"""How cost grows: with the data, the users, the history, the shard's input, and the main server's tables.

python -m benchmarks.scale sizes [--sizes 50000 200000 1000000] [--baseline-max 200000]
python -m benchmarks.scale reduce [--users 100000,300000,1000000]
python -m benchmarks.scale planner [--sizes 250000,1000000]
python -m benchmarks.scale vector-sums [--pairs 226000 --users 18500 --places 5000]
python -m benchmarks.scale shard-caps [--files 60] [--caps 150000,300000]
python -m benchmarks.scale catalogue [--sizes 10000 100000 --per-child 2000 --parallel 2]
python -m benchmarks.scale adopt [--rows 100000]
python -m benchmarks.scale serving [--actions 1000000 10000000 --calls 1000]
python -m benchmarks.scale history [--histories 0 10 100 --users 4000 --pairs-per-user 5]
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from benchmarks import report
from benchmarks.e2e import BUCKET, baseline, baseline_total, ours
from benchmarks.probes import KINDS, PER_FILE
from benchmarks.scale_inputs import (
    apply_batch,
    batch_env,
    fill_ledger,
    fill_main_server,
    history_responder,
    migrate_while_reading,
    reduce_batch,
    write_batch,
)
from benchmarks.services import running
from coordinator.sizing import MAX_ARRAY_SIZE
from local_stack.harness import module

# ---------------------------------------------------------------------------------------------
# sizes: one shard and the reduce, and the baseline, at growing data sizes


SIZES = """How cost grows: one shard and the reduce at several data sizes, users and places held fixed.

Shard time should grow with actions and the reduce with distinct users and places (fixed
here), not with actions. Each size starts on an empty database holding the sample place
catalogue, as `e2e compare`'s day 1: every place met is embedded from its catalogue text. The
baseline (`e2e compare`'s, the original's cost profile) runs at the sizes up to
--baseline-max, in the same run. Figure: actions/s against data size.
"""


def _one_size(services: Any, args: argparse.Namespace, size: int) -> dict[str, Any]:
    from local_stack.sample_data import generate

    prefix = f"size-{size}/"
    services.bucket(
        BUCKET, generate(actions=size, users=args.users, places=args.places, prefix=prefix, seed=size).files
    )
    url = services.database(catalogue_places=args.places)  # the main server's place_recommendations
    result = ours(services.env(BUCKET, S3_PREFIX=prefix, BATCH_ID=f"scale-{size}", DATABASE_URL=url), shards=1)
    stats, timings = result["report"]["stats"], result["timings"]
    row = {
        "actions": stats["records_read"],
        "files": stats["files"],
        "shard_s": timings["shards"],
        "reduce_s": timings["reduce"],
        "ours_s": sum(timings.values()),
        "shard_rss": stats["shard_peak_rss_mb"],
        "reduce_rss": stats["reduce_peak_rss_mb"],
    }
    if size <= args.baseline_max:
        row["baseline_s"] = baseline_total(baseline(services.client, BUCKET, services.database(), 2, prefix))
    report.progress(f"  {orjson.dumps(row).decode()}")
    return row


def _linear_fit(rows: list[dict[str, Any]], key: str, label: str) -> str:
    """Least-squares seconds = fixed + per_action * actions, and how far each size sits from it."""
    actions = np.array([r["actions"] for r in rows], dtype=float)
    seconds = np.array([r[key] for r in rows], dtype=float)
    per_action, fixed = np.polyfit(actions, seconds, 1)
    worst = np.max(np.abs(fixed + per_action * actions - seconds) / seconds)
    return (
        f"{label}: {fixed:.1f} s fixed + {per_action * 100_000:.2f} s per 100k actions "
        f"(largest deviation of a size from the line: {worst:.1%})"
    )


def _sizes_figure(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    figure, (plot,) = report.axes()
    plot.plot([r["actions"] for r in rows], [r["actions"] / r["ours_s"] for r in rows], "o-", label="ours")
    base = [r for r in rows if r.get("baseline_s")]
    if base:
        rates = [r["actions"] / r["baseline_s"] for r in base]
        plot.plot([r["actions"] for r in base], rates, "s--", label="baseline (original's cost profile)")
    e2e = orjson.loads(args.baseline_from.read_bytes()) if args.baseline_from else None
    if e2e is not None:
        rate = e2e["actions"] / baseline_total(e2e["baseline"])
        plot.plot([e2e["actions"]], [rate], "x", markersize=10, color="tab:red", label="baseline, from e2e compare")
    plot.set(xscale="log", yscale="log", xlabel="actions per run", ylabel="actions/s (end to end)")
    plot.set_title("Throughput against data size (local moto S3 + PostgreSQL)")
    plot.grid(True, which="both", alpha=0.3)
    plot.legend()
    report.write_figure(args.figures, "scaling", figure, rows)


def sizes(args: argparse.Namespace) -> None:
    with running() as services:
        rows = [_one_size(services, args, size) for size in args.sizes]
    print(f"users {args.users:,}, places {args.places:,} (fixed); one shard")
    table = []
    for r in rows:
        base = r.get("baseline_s")
        rates = [f"{r['actions'] / base:,.0f}", f"{base / r['ours_s']:.1f}x"] if base else ["-", "-"]
        table.append(
            [
                f"{r['actions']:,}",
                f"{r['files']:,}",
                f"{r['shard_s']:.1f}",
                f"{r['shard_rss']:.0f} MiB",
                f"{r['reduce_s']:.1f}",
                f"{r['reduce_rss']:.0f} MiB",
                f"{r['actions'] / r['ours_s']:,.0f}",
                *rates,
            ]
        )
    headers = ["actions", "files", "shard s", "shard RSS", "reduce s", "reduce RSS", "ours a/s", "base a/s", "ratio"]
    report.table(headers, table)
    first, last = rows[0], rows[-1]
    print(
        f"actions x{last['actions'] / first['actions']:.0f}: shard time x{last['shard_s'] / first['shard_s']:.1f}, "
        f"reduce time x{last['reduce_s'] / first['reduce_s']:.1f}"
    )
    if len(rows) > 1:
        print(_linear_fit(rows, "shard_s", "shard"))
        print(_linear_fit(rows, "reduce_s", "reduce"))
    _sizes_figure(args, rows)


# ---------------------------------------------------------------------------------------------
# reduce: the reduce at millions of distinct users


REDUCE = """The reduce at millions of distinct users: memory flat, time linear in users + pairs.

For each size, synthetic shard partials in the real format (written by the shard child's own
write_partial, with their signed plans and _SUCCESS.json) go to the local moto S3:
--pairs-per-user (user, place) pairs per distinct user, places drawn Zipf-like from a catalogue
that grows with the batch, pairs spread over shards of --pairs-per-shard, so a user appears in
several shards as in real input. Then `python -m reduce_job` applies the batch to a fresh
embedded PostgreSQL, as the job does, and its report gives wall time per stage and its own
peak RSS (VmHWM). Printed: a least-squares fit of time against users + pairs and the
projection to a 10 M-user batch. Figure: time and peak RSS against size.
"""


def _reduce_figure(args: argparse.Namespace, rows: list[dict[str, Any]], slope: float, intercept: float) -> None:
    work = np.array([r["users"] + r["pairs"] for r in rows], dtype=float) / 1e6
    figure, (left, right) = report.axes(columns=2, size=(10, 4))
    left.plot(work, [r["seconds"] for r in rows], "o", label="measured")
    span = np.linspace(0, work.max(), 50)
    left.plot(span, slope * span * 1e6 + intercept, "-", label=f"fit: {slope * 1e6:.1f} s per million rows")
    left.set(xlabel="users + pairs (millions)", ylabel="reduce wall time (s)", title="time: linear in rows")
    left.legend()
    right.plot([r["users"] / 1e6 for r in rows], [r["peak_mb"] for r in rows], "o-")
    right.axhline(1024, color="grey", linestyle="--", label="1 GiB")
    right.set(xlabel="distinct users (millions)", ylabel="reduce peak RSS (MiB)", title="memory: flat", ylim=(0, 1200))
    right.legend()
    report.write_figure(args.figures, "reduce_scale", figure, rows)


def reduce_at_scale(args: argparse.Namespace) -> None:
    with running() as services:
        rows = [
            reduce_batch(services, int(u), args.pairs_per_user, args.pairs_per_shard) for u in args.users.split(",")
        ]
    table = [
        [
            f"{r['users']:,}",
            f"{r['places']:,}",
            f"{r['pairs']:,}",
            r["shards"],
            f"{r['seconds']:.0f}",
            f"{(r['users'] + r['pairs']) / r['seconds']:,.0f}",
            f"{r['peak_mb']:.0f}",
            r["stages"],
        ]
        for r in rows
    ]
    report.table(["users", "places", "pairs", "shards", "reduce s", "rows/s", "peak MiB", "stages s"], table)
    x = np.array([r["users"] + r["pairs"] for r in rows], dtype=float)
    y = np.array([r["seconds"] for r in rows])
    slope, intercept = np.polyfit(x, y, 1) if len(rows) > 1 else (y[0] / x[0], 0.0)
    fitted = slope * x + intercept
    r2 = 1 - ((y - fitted) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-9)
    ten_m = slope * (10_000_000 * (1 + args.pairs_per_user)) + intercept
    print(f"\nfit: seconds = {slope * 1e6:.2f} per million (users + pairs) + {intercept:.1f}  (R^2 {r2:.3f})")
    print(f"projected 10 M users x {args.pairs_per_user} pairs: {ten_m:,.0f} s on this machine (job timeout 3600 s)")
    rss = [r["peak_mb"] for r in rows]
    print(f"peak RSS from {rss[0]:.0f} to {rss[-1]:.0f} MiB ({(max(rss) / min(rss) - 1) * 100:+.0f}% at most)")
    _reduce_figure(args, rows, slope, intercept)


# ---------------------------------------------------------------------------------------------
# planner: the planner against a long history


PLANNER = """The planner against a long history: time and memory follow the new hours, not all history.

The input is hour partitions of --files-per-hour batch files each; all but the last
--new-hours are in the ledger (processed_files, on the embedded PostgreSQL) and the planner's
watermark sits where the last plan left it. `python -m coordinator plan --dry-run` then runs as
a separate process, twice per history size: with --full (every key listed) and incremental
(the default); both find the same new files, and a dry run stops before claiming, so the two
differ only in what they list. The keys are served by a small ListObjectsV2 responder over
HTTP (moto cannot hold a million objects on this machine in reasonable time).
"""


def _run_coordinator(env: dict[str, str], *args: str) -> dict[str, Any]:
    """`coordinator args` in its own process: its plan and its own peak RSS (VmHWM), and its wall time."""
    started = time.perf_counter()
    done = module("benchmarks.probes", env, "coordinator", *args)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"coordinator {args[0]} failed: {done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    return {**orjson.loads(lines[-2]), **orjson.loads(lines[-1]), "seconds": seconds}


def _planner_runs(args: argparse.Namespace, size: int, url: str) -> dict[str, dict[str, Any]]:
    with history_responder(size // args.files_per_hour, args.files_per_hour) as (history, env):
        fill_ledger(url, history, args.new_hours)
        env["DATABASE_URL"] = url
        runs = {}
        for mode, extra in (("full", ("--full", "--dry-run")), ("incremental", ("--dry-run",))):
            runs[mode] = measured = _run_coordinator(
                env, "plan", "--batch-id", f"bench-{size}-{mode}", "--shards", "4", *extra
            )
            report.progress(
                f"  {size:>9,} keys, {mode:<11}: {measured['seconds']:6.1f} s, peak RSS"
                f" {measured['peak_rss_mb']:5.0f} MiB, planned {measured['files']:,} files ({measured['listing']})"
            )
    return runs


def planner(args: argparse.Namespace) -> None:
    from local_stack.postgres import LocalPostgres

    with LocalPostgres.running() as pg:
        runs = {size: _planner_runs(args, size, pg.new_database()) for size in (int(s) for s in args.sizes.split(","))}
    rows = [
        [
            f"{size:,}",
            f"{r['incremental']['files']:,}",
            f"{r['full']['seconds']:.1f}",
            f"{r['incremental']['seconds']:.1f}",
            report.ratio(r["full"]["seconds"], r["incremental"]["seconds"]),
            f"{r['full']['peak_rss_mb']:.0f} / {r['incremental']['peak_rss_mb']:.0f}",
        ]
        for size, r in runs.items()
    ]
    headers = ["keys in history", "new files", "full s", "incremental s", "ratio", "peak RSS full / incr MiB"]
    report.table(headers, rows)
    seconds = {f"{size:,} keys": {mode: r[mode]["seconds"] for mode in r} for size, r in runs.items()}
    report.write_bars(args.figures, "planner", "planning against a long history", "s", seconds)


# ---------------------------------------------------------------------------------------------
# vector-sums: the reduce's vector sums


VECTOR_SUMS = """The reduce's vector sums: at two gather sizes, a batch's place deltas two ways, and by block fill.

Pairs shaped like a 200k-action batch's history (users with a handful of pairs each, places
drawn Zipf-like), content vectors and user means of 384 floats, every comparison alternating
its contenders, medians of --repeat:
  * vector_sums._sum_by_key keyed by user (the means) and by place (the sums), with
    GATHER_ROWS at 4,096 and at the current value;
  * a batch's place deltas, sum over pairs of w_new m_new - w_old m_old: two products per pair,
    or for the pairs the batch did not change (all but --changed of them) one product of the
    user's difference m_new - m_old (as _add_block; its lookup of each user's old mean is not
    timed, so the ratio is a little high). 5% is a long history's batch; a day 2 at 200k
    changes about half its users' pairs (--changed 0.56);
  * vector_sums._add_products over blocks of consecutive users (cut by PAIRS_PER_BLOCK as
    BLOCK_STARTS cuts them), keyed by user and by place: every pair gathered, every block a
    matrix, and by DENSE_FILL, on the pairs above and on uniform histories of --history-pairs
    pairs, each user with --per-user distinct places of --history-places (a block's fill is
    about per-user / places): where the matrix starts to pay is what DENSE_FILL is set from.
"""


OLD_GATHER_ROWS = 4_096


@dataclass
class Pairs:
    """(user, place) pairs sorted by user, their weights, and the vectors they gather."""

    users: np.ndarray
    places: np.ndarray
    weights: np.ndarray
    content: np.ndarray  # a place's content vector
    means: np.ndarray  # a user's mean


def _day2_pairs(args: argparse.Namespace, rng: np.random.Generator) -> Pairs:
    from witple_batch.model_files import EMBEDDING_DIM

    return Pairs(
        users=np.sort(rng.integers(0, args.users, args.pairs)),
        places=np.minimum(rng.zipf(1.3, args.pairs) - 1, args.places - 1),
        weights=rng.random(args.pairs) * 5,
        content=rng.standard_normal((args.places, EMBEDDING_DIM)).astype(np.float32),
        means=rng.standard_normal((args.users, EMBEDDING_DIM)).astype(np.float32),
    )


def _seconds(run: Callable[[], object], setting: str, value: float) -> float:
    """`run` timed with vector_sums.`setting` at `value` (the caller puts it back)."""
    from reduce_job import vector_sums

    setattr(vector_sums, setting, value)
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def _settings_against(
    setting: str, values: dict[str, float], run: Callable[[], object], repeat: int
) -> dict[str, float]:
    """Median seconds of `run` at each value of vector_sums.`setting`, the values alternating."""
    from reduce_job import vector_sums

    current = getattr(vector_sums, setting)
    contenders = {name: lambda v=v: _seconds(run, setting, v) for name, v in values.items()}
    try:
        return report.medians(report.alternating(contenders, repeat))
    finally:
        setattr(vector_sums, setting, current)


def _gather_rows(args: argparse.Namespace, p: Pairs) -> list[list[str]]:
    from reduce_job import vector_sums

    sizes = {"old": OLD_GATHER_ROWS, "current": vector_sums.GATHER_ROWS}
    runs = {
        "user (means)": lambda: list(vector_sums._sum_by_key(p.users, p.content, p.places, p.weights)),
        "place (deltas)": lambda: list(vector_sums._sum_by_key(p.places, p.means, p.users, p.weights)),
    }
    rows = []
    for label, run in runs.items():
        got = _settings_against("GATHER_ROWS", sizes, run, args.repeat)
        rows.append([label, f"{got['old']:.3f}s", f"{got['current']:.3f}s", report.ratio(got["old"], got["current"])])
    return rows


def _delta_seconds(p: Pairs, terms: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    from reduce_job import vector_sums

    started = time.perf_counter()
    delta = np.zeros((len(p.content), p.content.shape[1]))
    for vectors, mask, signed in terms:
        for keys, partial in vector_sums._sum_by_key(p.places[mask], vectors, p.users[mask], signed[mask]):
            delta[keys] += partial
    return time.perf_counter() - started


def _delta_row(args: argparse.Namespace, p: Pairs, rng: np.random.Generator) -> list[str]:
    """A batch's place deltas: two products per pair, or one difference per unchanged pair."""
    old_means = p.means + rng.standard_normal(p.means.shape).astype(np.float32) * 0.01  # a batch moves means a little
    changed = rng.random(args.pairs) < args.changed
    old_weights = np.where(changed, p.weights * rng.random(args.pairs), p.weights)  # a changed pair weighed less
    every = np.ones(args.pairs, dtype=bool)
    contenders = {
        "two products per pair": lambda: _delta_seconds(
            p, [(p.means, every, p.weights), (old_means, every, -old_weights)]
        ),
        # the difference is taken inside the timing, as _add_block takes it per block
        "one difference per unchanged pair": lambda: _delta_seconds(
            p,
            [
                (p.means, changed, p.weights),
                (old_means, changed, -old_weights),
                (p.means - old_means, ~changed, p.weights),
            ],
        ),
    }
    two, one = report.medians(report.alternating(contenders, args.repeat)).values()
    return [f"{args.changed:.0%} of pairs changed", f"{two:.3f}s", f"{one:.3f}s", report.ratio(two, one)]


def _histories(args: argparse.Namespace, p: Pairs, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    """The pairs above made distinct (as the database sends them), and a uniform history per --per-user."""
    distinct = np.unique(np.c_[p.users, p.places], axis=0, return_index=True)[1]  # sorted by user, then place
    shapes = {"day 2 (above)": (p.users[distinct], p.places[distinct], p.weights[distinct])}
    for per_user in (int(n) for n in args.per_user.split(",")):
        users = args.history_pairs // per_user
        places = [rng.choice(args.history_places, per_user, replace=False) for _ in range(users)]
        weights = rng.random(users * per_user) * 5
        shapes[f"{per_user} of {args.history_places:,}"] = (
            np.repeat(np.arange(users), per_user),
            np.concatenate(places),
            weights,
        )
    return shapes


def _blocked(
    users: np.ndarray, places: np.ndarray, weights: np.ndarray, vectors: np.ndarray, by_user: bool
) -> tuple[Callable[[], None], list[float]]:
    """A run of _add_products over blocks of consecutive users, and each block's fill (pairs / keys x rows).

    `users` sorted; a block is the users whose first pair starts within the same PAIRS_PER_BLOCK, as BLOCK_STARTS.
    """
    from reduce_job import vector_sums

    _, user_starts = vector_sums._runs(users)
    window = user_starts // vector_sums.PAIRS_PER_BLOCK
    starts = user_starts[np.r_[True, window[1:] != window[:-1]]].tolist()
    bounds = list(zip(starts, [*starts[1:], len(users)], strict=True))
    fills = [(hi - lo) / (len(np.unique(users[lo:hi])) * len(np.unique(places[lo:hi]))) for lo, hi in bounds]
    out = np.full(((users if by_user else places).max() + 1, vectors.shape[1]), 0.0)  # its pages written untimed

    def run() -> None:
        for lo, hi in bounds:
            keys, rows = (users[lo:hi], places[lo:hi]) if by_user else (places[lo:hi], users[lo:hi])
            vector_sums._add_products(out, keys, vectors, rows, weights[lo:hi])

    return run, fills


def _fill_rows(args: argparse.Namespace, p: Pairs, rng: np.random.Generator) -> list[list[str]]:
    from reduce_job import vector_sums

    fills = {"gathered": math.inf, "matrix": 0.0, "by fill": vector_sums.DENSE_FILL}
    rows = []
    for shape, (users, places, weights) in _histories(args, p, rng).items():
        for label, by_user in (("user", True), ("place", False)):
            vectors = rng.standard_normal(((places if by_user else users).max() + 1, p.content.shape[1]))
            run, block_fills = _blocked(users, places, weights, vectors.astype(np.float32), by_user)
            got = _settings_against("DENSE_FILL", fills, run, args.repeat)
            fill = f"{min(block_fills):.1%}-{max(block_fills):.1%}"
            rows.append(
                [shape, label, fill, *(f"{got[k]:.3f}s" for k in fills), report.ratio(got["gathered"], got["by fill"])]
            )
    return rows


def vector_sums(args: argparse.Namespace) -> None:
    from reduce_job import vector_sums as sums

    rng = np.random.default_rng(7)
    p = _day2_pairs(args, rng)
    print(f"{args.pairs:,} pairs, {args.users:,} users, {args.places:,} places, medians of {args.repeat}")
    gather = _gather_rows(args, p)
    headers = ["sums keyed by", f"{OLD_GATHER_ROWS:,} rows", f"{sums.GATHER_ROWS:,} rows", "ratio"]
    report.table(headers, gather, "GATHER_ROWS, old and current")
    deltas = _delta_row(args, p, rng)
    report.table(
        ["batch place deltas", "two products", "one difference", "ratio"],
        [deltas],
        f"at {sums.GATHER_ROWS:,} rows a gather",
    )
    fills = _fill_rows(args, p, rng)
    headers = ["shape", "keyed by", "fill (blocks)", "gathered", "matrix", "by fill", "ratio"]
    report.table(
        headers, fills, f"sums over blocks of {sums.PAIRS_PER_BLOCK:,} pairs: all gathered, all matrices, or by fill"
    )
    ratios = {
        "GATHER_ROWS": {row[0]: float(row[-1][:-1]) for row in gather},
        "place deltas": {deltas[0]: float(deltas[-1][:-1])},
        "by fill against gathered": {f"{row[0]}, {row[1]}": float(row[-1][:-1]) for row in fills},
    }
    report.write_bars(args.figures, "vector_sums", "the reduce's vector sums: speed-up", "x", ratios)


# ---------------------------------------------------------------------------------------------
# shard-caps: a shard's memory against its caps


SHARD_CAPS = """A shard's memory against its caps: files whose names say 0 actions, ids all new.

The planner sizes runs by the action counts in file names and shards by listed bytes; neither
bounds what a shard holds when a producer understates its counts or gzip inflates. The
child's own caps do: past MAX_ACTIONS_PER_SHARD accepted actions or MAX_PLACES_PER_SHARD
distinct places, the rest of its files wait for the next plan. Each row reads the same stream
of files (10,000 actions each, named `batch-<ms>-0-<id>.json`) into one shard, in a fresh
process, through the whole child but S3 and the database (reading and aggregation, place
texts and content vectors with the catalogue off, the partial's encoding), and prints the
peak resident memory above the process's size once the model is loaded (VmHWM):
  * ids all new: every action a new user id and a new place id, 256 characters each (the place
    cap binds first: a quarter of the action cap, as the defaults' 1,000,000 / 250,000);
  * users new: every action a new 256-character user id, 2,000 places;
  * repeated ids: 4,000 users and 2,000 places, as an hourly batch.
"no cap" is the child before the caps (caps above the input).
"""


def _capped_shard(files: int, cap: int, kind: str) -> dict[str, float]:
    """One capped shard in a fresh process (benchmarks.probes), so each row's peak is its own."""
    done = module("benchmarks.probes", {}, "capped-shard", str(files), str(cap), kind)
    if done.returncode != 0:
        sys.exit(f"the capped shard failed: {done.stderr[-3000:]}")
    return orjson.loads(done.stdout.splitlines()[-1])


def shard_caps(args: argparse.Namespace) -> None:
    caps = [*(int(c) for c in args.caps.split(",")), 0]  # 0: no cap
    total = args.files * PER_FILE
    print(f"input: {args.files} files, {total:,} actions, every name claiming 0 actions")
    peaks: dict[str, dict[str, float]] = {}
    rows = []
    for kind in KINDS:
        for cap in caps:
            got = _capped_shard(args.files, cap, kind)
            label = f"{cap:,}" if cap else "no cap"
            peaks.setdefault(kind, {})[label] = got["peak_mb"]
            rows.append(
                [
                    kind,
                    label,
                    f"{got['accepted']:,}",
                    f"{got['places']:,}",
                    f"{got['files_left']:,}",
                    f"{got['encoded_mb']:.1f}",
                    f"{got['peak_mb']:.1f}",
                    f"{got['peak_mb'] * (1 << 20) / max(got['accepted'], 1):.0f}",
                    f"{got['process_peak_mb']:.0f}",
                    f"{got['seconds']:.1f}",
                ]
            )
    headers = ["ids", "action cap", "accepted", "places", "files left", "partial MiB", "peak MiB", "B/action"]
    report.table([*headers, "process MiB", "s"], rows)
    for kind, by_cap in peaks.items():
        first, *rest = by_cap.values()
        print(f"{kind}: peaks against the first cap's: {', '.join(report.ratio(p, first) for p in rest)}")
    report.write_bars(args.figures, "shard_caps", "a shard's peak above its model, by cap", "MiB", peaks)


# ---------------------------------------------------------------------------------------------
# catalogue: the catalogue sync as the catalogue grows


CATALOGUE = """The catalogue sync at growing catalogue sizes: the first sync, 1% edited, 1% removed, unchanged.

For each of --sizes (rows of the sample catalogue in the main server's place_recommendations,
each text made distinct), on a fresh database: the first sync with its children run one at a
time, then on a fresh database again with --parallel children at once, as an array that wide
runs. Each child embeds on one thread, as a 1-vCPU child would, so --parallel children use as
many cores as Batch would give them (keep --parallel at most the cores). Then a second sync after
every 100th row's overview was edited, which must embed exactly those rows; a third after another
1% of the rows were removed, which must re-embed exactly those places from their fallback texts
(their categories' words: a few texts); and a fourth on the unchanged catalogue, which embeds
nothing (its plan is one comparison in SQL, a chunk at a time).
Each child embeds --per-child places (the coordinator's default), so a bigger catalogue means
more children, not bigger ones. Peak RSS (VmHWM): the sync's planner (a dry run in its own
process, over the whole catalogue), the biggest child's and the reduce's, which should not grow
with the catalogue.
"""


def _sync_once(services: Any, url: str, batch: str, args: argparse.Namespace, parallel: int, size: int) -> Any:
    from local_stack.harness import run_batch

    env = services.env(BUCKET, DATABASE_URL=url, BATCH_ID=batch, EMBED_THREADS="1")  # a 1-vCPU child
    children = min(math.ceil(size / args.per_child), MAX_ARRAY_SIZE)
    return run_batch(env, sync=True, processes=True, parallel=parallel, per_child=args.per_child, max_children=children)


def _sync_row(label: str, result: Any) -> dict[str, Any]:
    seconds = sum(result.seconds.values())
    stats = result.report["stats"] if result.report else {}
    row = {
        "sync": label,
        "places": result.plan["places"],
        "children": result.plan["shards"],
        "embedded": stats.get("texts_embedded", 0),
        "seconds": seconds,
        "places_s": result.plan["places"] / seconds,
        "child_rss": stats.get("shard_peak_rss_mb", 0.0),
        "reduce_rss": stats.get("reduce_peak_rss_mb", 0.0),
    }
    report.progress(f"  {orjson.dumps(row).decode()}")
    return row


def _distinct_texts(url: str) -> None:
    """The sample catalogue repeats its short texts; a real one does not, and the shard embeds a text once."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE place_recommendations SET name = name || ' No. ' || place_id")


# 1% of the catalogue's rows changed two ways: each sync after one must plan exactly those places
EDIT_EVERY_HUNDREDTH = "UPDATE place_recommendations SET overview = overview || ' Renovated.' WHERE id % 100 = 0"
REMOVE_EVERY_HUNDREDTH = "DELETE FROM place_recommendations WHERE id % 100 = 50"


def _rows_changed(url: str, statement: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(statement).rowcount  # type: ignore[arg-type]


def _planner_rss(services: Any, url: str, args: argparse.Namespace, size: int, when: str) -> float:
    """The sync's planner alone, a dry run in its own process bounded to the whole catalogue: its peak RSS."""
    children = str(min(math.ceil(size / args.per_child), MAX_ARRAY_SIZE))
    flags = ("--sync-per-child", str(args.per_child), "--max-sync-children", children)
    env = services.env(BUCKET, DATABASE_URL=url)
    planned = _run_coordinator(env, "sync", "--dry-run", "--batch-id", f"dry-{size}-{uuid.uuid4().hex[:6]}", *flags)
    report.progress(f"  planner, {size:,} rows, {when}: {planned['places']:,} places, {planned['peak_rss_mb']:.0f} MiB")
    return planned["peak_rss_mb"]


def _catalogue_size(services: Any, args: argparse.Namespace, size: int) -> tuple[list[dict[str, Any]], list[str]]:
    """The size's sync rows, and its planner row: peak RSS planning the whole catalogue, and an unchanged one."""
    rows = []
    for parallel in sorted({1, args.parallel}):
        url = services.database(catalogue_places=size)
        _distinct_texts(url)
        planning_all = _planner_rss(services, url, args, size, "before the first sync")
        first = _sync_once(services, url, f"sync-{size}-{parallel}-first", args, parallel, size)
        rows.append(_sync_row(f"{size:,}: first, {parallel} at once", first))
    for change, statement in (("edited", EDIT_EVERY_HUNDREDTH), ("removed", REMOVE_EVERY_HUNDREDTH)):
        changed = _rows_changed(url, statement)
        again = _sync_once(services, url, f"sync-{size}-{change}", args, args.parallel, size)
        rows.append(_sync_row(f"{size:,}: {changed:,} rows {change}", again))
        # a removed place's fallback text is its category's words: one embedding serves a category
        if rows[-1]["places"] != changed or (change == "edited" and rows[-1]["embedded"] != changed):
            sys.exit(f"the {change} sync embedded {rows[-1]['embedded']:,} of {rows[-1]['places']:,}, not {changed:,}")
    rows.append(_sync_row(f"{size:,}: unchanged", _sync_once(services, url, f"sync-{size}-same", args, 1, size)))
    planning_none = _planner_rss(services, url, args, size, "in sync")
    return rows, [f"{size:,}", f"{planning_all:.0f}", f"{planning_none:.0f}"]


def catalogue_sync(args: argparse.Namespace) -> None:
    with running() as services:
        services.bucket(BUCKET)
        measured = [_catalogue_size(services, args, size) for size in args.sizes]
    rows = [row for size_rows, _ in measured for row in size_rows]
    report.table(
        ["sync", "places", "children", "embedded", "seconds", "places/s", "child MiB", "reduce MiB"],
        [
            [
                r["sync"], f"{r['places']:,}", r["children"], f"{r['embedded']:,}", f"{r['seconds']:.1f}",
                f"{r['places_s']:,.0f}", f"{r['child_rss']:.0f}", f"{r['reduce_rss']:.0f}",
            ]
            for r in rows
        ],
    )  # fmt: skip
    report.table(
        ["catalogue rows", "planner MiB, planning every row", "planner MiB, catalogue in sync"],
        [planner for _, planner in measured],
    )
    numbers = {r["sync"]: {"seconds": r["seconds"]} for r in rows}
    report.write_bars(args.figures, "catalogue_sync", "catalogue sync, seconds", "s", numbers)


# ---------------------------------------------------------------------------------------------
# adopt: the migration onto the main server's tables


ADOPT = """Adopting the main server's tables: how long the migration holds them, on a realistic size.

Builds the main server's schema (local_stack/main_server.py) on the embedded PostgreSQL with
--rows users (each with a 384-float `double precision[]` vector) and as many place rows (1%
duplicated, as the original batch's row-per-run left them; 0.1% of vectors unusable: NaN,
wrong length, empty), then runs `python -m reduce_job migrate` as a deployment would, while a
reader queries both tables every 50 ms the way the main server's API does. Printed: the dry
run's plan, the migration's wall time, and the longest any read waited (the time the tables
were locked).
"""


def adopt(args: argparse.Namespace) -> None:
    from local_stack.postgres import LocalPostgres

    with LocalPostgres.running() as pg:
        url = pg.new_database()
        filled = fill_main_server(url, args.rows)
        print(f"main server's tables: {args.rows:,} users and {args.rows:,} place rows, filled in {filled:.0f} s")
        plan, dry_seconds, seconds, waits = migrate_while_reading(url)
    print(f"dry run ({dry_seconds:.1f} s):\n{plan}")
    ordered = sorted(waits)
    print(f"migration: {seconds:.1f} s wall (one process, from start to exit)")
    print(
        f"reads during it: {len(waits)}, median {ordered[len(ordered) // 2] * 1000:.1f} ms,"
        f" longest {ordered[-1]:.2f} s (the time the tables were locked)"
    )
    numbers = {"migration": {"seconds": seconds}, "longest read": {"seconds": ordered[-1]}}
    report.write_bars(args.figures, "adopt", f"adopting {args.rows:,} rows per table", "s", numbers)


# ---------------------------------------------------------------------------------------------
# serving: recommend_places' latency as the data grows


SERVING = """recommend_places' latency as the data grows: the heaviest users and random ones, alone and beside a reduce.

For each of --actions, a fresh database loaded through the real reduce (`python -m reduce_job` on
synthetic shard partials, as `scale reduce`): 75 users per 1,000 actions, the i-th drawn in
proportion to 1 / (i + 1)^0.8, so the heaviest act on thousands of places; places Zipf-like,
20,000 at 1 M actions (growing with the square root of users), each with a catalogue row; and a
tenth more catalogue places no one has acted on (what the new-places term ranks), stored as the
sync that embeds them would (place_vectors and fresh_places). Content vectors
are random unit vectors: the cost depends on the tables' sizes, not on what the vectors say. Then
--calls calls of `recommend_places(user, 10)` on one connection, timed at the client: the 20 users
with the most places and the rest drawn at random, in random order. Then calls again, the same
users in turn, for as long as a reduce applies another batch of the same users on the same
database (one new pair per user drawn). Printed: p50, p95 and max per size, for every call and
for the heaviest users, and beside the reduce; figure: latency against actions.
"""

USERS_PER_ACTION = 0.075  # 75,000 users at 1 M actions
USER_SKEW = 0.8
PAIRS_PER_USER = 7  # pairs drawn per user (fewer once repeated pairs merge), about 2.8 actions each
HOT_USERS = 20
NEW_PLACES = """
INSERT INTO place_vectors (place_id, place_category, content_vector, combined_vector, content_model,
    place_text_version, content_text_sha256, catalogue_sha256)
SELECT 'new-' || place_id, place_category, content_vector, content_vector, content_model, place_text_version,
    content_text_sha256, catalogue_sha256
FROM place_vectors WHERE random() < 0.1;
INSERT INTO fresh_places (place, place_category, place_id, content_vector)  -- as the sync that embeds them would
SELECT id, place_category, place_id, content_vector FROM place_vectors WHERE place_id LIKE 'new-%'
"""


def _load(services: Any, actions: int) -> tuple[dict[str, str], dict[str, Any]]:
    """A database holding `actions` actions' tables, through the reduce; the batch's env and the tables' sizes."""
    import psycopg

    users = int(actions * USERS_PER_ACTION)
    env = batch_env(services, f"serving-{actions}-load")
    started = time.perf_counter()
    write_batch(env, users, PAIRS_PER_USER, 500_000, user_skew=USER_SKEW)
    apply_batch(services, env)
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("SELECT setseed(0.5)")
        conn.execute(NEW_PLACES)
        conn.execute("VACUUM ANALYZE")
        (sizes,) = conn.execute(
            "SELECT (SELECT sum(clicks + likes + bookmarks) FROM user_place_interactions),"
            " (SELECT count(*) FROM user_behavior_vectors), (SELECT count(*) FROM place_vectors),"
            " (SELECT count(*) FROM place_vectors WHERE unique_users = 0),"
            " (SELECT count(*) FROM user_place_interactions)"
        ).fetchall()
    size = dict(zip(("actions", "users", "places", "new_places", "pairs"), map(int, sizes), strict=True))
    report.progress(f"  loaded in {time.perf_counter() - started:.0f} s: {orjson.dumps(size).decode()}")
    return env, size


def _callers(url: str, calls: int) -> tuple[list[str], set[str]]:
    """The users to call for, in call order: the heaviest and the rest at random; and the heaviest."""
    import psycopg

    with psycopg.connect(url) as conn:
        heaviest = conn.execute(
            "SELECT user_id FROM user_place_interactions GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT %s",
            (HOT_USERS,),
        ).fetchall()
        everyone = [user for (user,) in conn.execute("SELECT user_id FROM user_behavior_vectors ORDER BY user_id")]
    rng = np.random.default_rng(7)
    order = [user for (user,) in heaviest] + list(rng.choice(everyone, size=max(calls - HOT_USERS, 0)))
    rng.shuffle(order)
    return order, {user for (user,) in heaviest}


def _timed_calls(url: str, users: list[str], until: Callable[[int], bool]) -> list[float]:
    """Milliseconds of each `recommend_places(user, 10)` call, users in turn, until `until(calls made)`."""
    import psycopg

    millis = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT * FROM recommend_places(%s, 10)", (users[0],)).fetchall()  # connection warmed
        while not until(len(millis)):
            started = time.perf_counter()
            conn.execute("SELECT * FROM recommend_places(%s, 10)", (users[len(millis) % len(users)],)).fetchall()
            millis.append((time.perf_counter() - started) * 1000)
    return millis


def _beside_a_reduce(
    services: Any, env: dict[str, str], loaded_users: int, users: list[str]
) -> tuple[list[float], float]:
    """Calls for as long as a reduce applies another batch of the loaded users: their milliseconds, its seconds."""
    batch = env | {"BATCH_ID": env["BATCH_ID"].replace("-load", "-during")}
    write_batch(batch, loaded_users, 1, 500_000, user_skew=USER_SKEW, seed=1)
    outcome: dict[str, Any] = {}

    def reduce() -> None:
        started = time.perf_counter()
        try:
            apply_batch(services, batch)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            outcome["error"] = exc
        outcome["seconds"] = time.perf_counter() - started

    thread = threading.Thread(target=reduce)
    thread.start()
    millis = _timed_calls(env["DATABASE_URL"], users, lambda _: not thread.is_alive())
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return millis, outcome["seconds"]


def _latency(millis: list[float]) -> dict[str, float]:
    if not millis:
        return {"calls": 0, "p50": float("nan"), "p95": float("nan"), "max": float("nan")}
    p50, p95 = np.percentile(millis, [50, 95])
    return {"calls": len(millis), "p50": float(p50), "p95": float(p95), "max": float(max(millis))}


def _serving_size(services: Any, args: argparse.Namespace, actions: int) -> dict[str, Any]:
    env, size = _load(services, actions)
    users, heaviest = _callers(env["DATABASE_URL"], args.calls)
    millis = _timed_calls(env["DATABASE_URL"], users, lambda made: made >= len(users))
    alone = _latency(millis)
    hot = _latency([m for m, user in zip(millis, users, strict=True) if user in heaviest])
    during, reduce_seconds = _beside_a_reduce(services, env, int(actions * USERS_PER_ACTION), users)
    row = size | {"alone": alone, "heaviest": hot, "beside_reduce": _latency(during), "reduce_s": reduce_seconds}
    report.progress(f"  {orjson.dumps(row).decode()}")
    return row


def serving(args: argparse.Namespace) -> None:
    with running() as services:
        rows = [_serving_size(services, args, actions) for actions in args.actions]

    def cells(latency: dict[str, float]) -> list[str]:
        return [f"{latency['calls']:,}", *(f"{latency[k]:,.0f}" for k in ("p50", "p95", "max"))]

    latency = ("calls", "p50 ms", "p95 ms", "max ms")
    report.table(
        ["actions", "users", "places (new)", "pairs", *latency, *(f"heaviest {h}" for h in latency),
         *(f"beside a reduce: {h}" for h in latency), "reduce s"],
        [
            [f"{r['actions']:,}", f"{r['users']:,}", f"{r['places']:,} ({r['new_places']:,})", f"{r['pairs']:,}",
             *cells(r["alone"]), *cells(r["heaviest"]), *cells(r["beside_reduce"]), f"{r['reduce_s']:.0f}"]
            for r in rows
        ],
    )  # fmt: skip
    figure, (plot,) = report.axes()
    x = [r["actions"] for r in rows]
    for key, style in (("p50", "o-"), ("p95", "s-"), ("max", "^-")):
        plot.plot(x, [r["alone"][key] for r in rows], style, label=f"{key}, alone")
        plot.plot(x, [r["beside_reduce"][key] for r in rows], style, alpha=0.5, label=f"{key}, beside a reduce")
    plot.set(xscale="log", yscale="log", xlabel="actions loaded", ylabel="ms per call", title="recommend_places")
    plot.legend(fontsize=7)
    report.write_figure(args.figures, "serving", figure, rows)


# ---------------------------------------------------------------------------------------------
# history: the hourly batch after a long history


HISTORY = """The hourly batch after a long history: its cost follows the batch, not the history.

For each history size (0, 10x and 100x the batch's pairs) a fresh database is loaded through
the reduce with synthetic batches of the same --users until user_place_interactions holds that
many pairs, and consolidated. Then --batches hourly batches of --users x --pairs-per-user pairs
(about 50k actions), every user returning (the heaviest case: each recomputed user would read
its whole history, each new pair would count against all its user's places), each timed as
`python -m reduce_job` end to end, neighbour counting after the notice included; then one
consolidation, which carries every one of those users into all the places of its history.
Figure: seconds and peak RSS against the history's size.
"""

LOAD_PAIRS = 400_000  # pairs drawn per loading batch
HISTORY_STAGES = ("interactions", "vectors", "write", "serving")


def _reduce_seconds(services: Any, env: dict[str, str], users: int, pairs_per_user: int, seed: int) -> dict[str, Any]:
    env = env | {"BATCH_ID": f"{env['BATCH_ID']}-{seed}"}
    write_batch(env, users, pairs_per_user, 500_000, seed=seed)
    started = time.perf_counter()
    got = apply_batch(services, env)
    seconds = time.perf_counter() - started
    stages = {k: got["seconds"].get(k, 0.0) for k in HISTORY_STAGES}
    after = seconds - sum(got["seconds"].values())  # the report, the notice and the neighbour counting
    return {"seconds": seconds, **stages, "after_commit": after, "rss": got["stats"]["reduce_peak_rss_mb"]}


def _consolidated(env: dict[str, str]) -> dict[str, Any]:
    done = module("reduce_job", env, "consolidate", timeout=7200)
    if done.returncode != 0:
        raise SystemExit(f"consolidate failed: {done.stderr[-3000:]}")
    return orjson.loads(done.stdout)


def _history_size(services: Any, args: argparse.Namespace, multiple: int) -> dict[str, Any]:
    import psycopg

    env = batch_env(services, f"history-{multiple}")
    batch_pairs = args.users * args.pairs_per_user
    pairs, seed = 0, 0
    while pairs < multiple * batch_pairs:
        seed += 1
        _reduce_seconds(services, env, args.users, LOAD_PAIRS // args.users, seed)
        with psycopg.connect(env["DATABASE_URL"]) as conn:
            pairs = int(conn.execute("SELECT count(*) FROM user_place_interactions").fetchone()[0])  # type: ignore[index]
        report.progress(f"  {multiple}x: {pairs:,} history pairs after {seed} loading batches")
    if pairs:
        _consolidated(env)
    batches = [_reduce_seconds(services, env, args.users, args.pairs_per_user, 1000 + b) for b in range(args.batches)]
    consolidation = _consolidated(env)
    row = {
        "multiple": multiple,
        "history_pairs": pairs,
        "batch_s": float(np.median([b["seconds"] for b in batches])),
        **{f"{k}_s": float(np.median([b[k] for b in batches])) for k in (*HISTORY_STAGES, "after_commit")},
        "batch_rss": max(b["rss"] for b in batches),
        "consolidation_s": consolidation["seconds"],
        "consolidation_users": consolidation["users"],
        "consolidation_rss": consolidation["peak_rss_mb"],
    }
    report.progress(f"  {orjson.dumps(row).decode()}")
    return row


def history(args: argparse.Namespace) -> None:
    with running() as services:
        rows = [_history_size(services, args, multiple) for multiple in args.histories]
    first = rows[0]
    report.table(
        ["history", "history pairs", "batch s (median)", "x the first", *(f"{k} s" for k in HISTORY_STAGES),
         "after the commit s", "batch peak MiB", "consolidation s", "users carried", "consolidation peak MiB"],
        [
            [f"{r['multiple']}x", f"{r['history_pairs']:,}", f"{r['batch_s']:.1f}",
             f"{r['batch_s'] / first['batch_s']:.2f}x", *(f"{r[f'{k}_s']:.2f}" for k in HISTORY_STAGES),
             f"{r['after_commit_s']:.2f}", f"{r['batch_rss']:.0f}",
             f"{r['consolidation_s']:.1f}", f"{r['consolidation_users']:,}", f"{r['consolidation_rss']:.0f}"]
            for r in rows
        ],
    )  # fmt: skip
    figure, (left, right) = report.axes(columns=2, size=(10, 4))
    x = [r["history_pairs"] / (args.users * args.pairs_per_user) for r in rows]
    left.plot(x, [r["batch_s"] for r in rows], "o-", label="hourly batch (median)")
    left.plot(x, [r["consolidation_s"] for r in rows], "s--", label="consolidation")
    left.set(xlabel="history (x the batch's pairs)", ylabel="seconds", title="time")
    left.legend()
    right.plot(x, [r["batch_rss"] for r in rows], "o-", label="hourly batch")
    right.plot(x, [r["consolidation_rss"] for r in rows], "s--", label="consolidation")
    right.set(xlabel="history (x the batch's pairs)", ylabel="peak RSS (MiB)", title="memory", ylim=(0, None))
    right.legend()
    report.write_figure(args.figures, "history", figure, rows)


# ---------------------------------------------------------------------------------------------


def _arguments(sub: Any) -> None:
    run = report.command(sub, "sizes", SIZES, sizes)
    run.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000, 1_000_000])
    run.add_argument("--users", type=int, default=20_000)
    run.add_argument("--places", type=int, default=5_000)
    run.add_argument("--baseline-max", type=int, default=0, help="run the baseline at sizes up to this")
    run.add_argument("--baseline-from", type=Path, help="also plot the baseline point of an e2e compare e2e.json")
    run = report.command(sub, "reduce", REDUCE, reduce_at_scale)
    run.add_argument("--users", default="100000,300000,1000000", help="distinct users per batch, comma-separated")
    run.add_argument("--pairs-per-user", type=int, default=10)
    run.add_argument("--pairs-per-shard", type=int, default=500_000)
    run = report.command(sub, "history", HISTORY, history)
    run.add_argument("--histories", type=int, nargs="+", default=[0, 10, 100], help="x the batch's pairs")
    run.add_argument("--users", type=int, default=4_000)
    run.add_argument("--pairs-per-user", type=int, default=5, help="the batch's pairs per user (5: about 50k actions)")
    run.add_argument("--batches", type=int, default=3, help="hourly batches timed per history (median)")
    run = report.command(sub, "planner", PLANNER, planner)
    run.add_argument("--sizes", default="250000,1000000", help="listed keys of each history (comma-separated)")
    run.add_argument("--files-per-hour", type=int, default=100)
    run.add_argument("--new-hours", type=int, default=100, help="newest hours not yet planned (1%% of 1M)")


def main(argv: list[str] | None = None) -> None:
    parser, sub = report.parser(__spec__.name, __doc__)
    _arguments(sub)
    run = report.command(sub, "vector-sums", VECTOR_SUMS, vector_sums)
    run.add_argument("--pairs", type=int, default=226_000)
    run.add_argument("--users", type=int, default=18_500)
    run.add_argument("--places", type=int, default=5_000)
    run.add_argument("--repeat", type=int, default=7)
    run.add_argument("--changed", type=float, default=0.05, help="share of pairs the batch changed")
    run.add_argument("--history-pairs", type=int, default=500_000, help="pairs of each uniform history")
    run.add_argument("--per-user", default="16,24,32,48,64,250", help="distinct places per user, a history each")
    run.add_argument("--history-places", type=int, default=2_000)
    run = report.command(sub, "shard-caps", SHARD_CAPS, shard_caps)
    run.add_argument("--files", type=int, default=60, help=f"files of {PER_FILE:,} actions")
    run.add_argument("--caps", default="150000,300000", help="MAX_ACTIONS_PER_SHARD values (places: a quarter)")
    run = report.command(sub, "catalogue", CATALOGUE, catalogue_sync)
    run.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="catalogue rows")
    run.add_argument("--per-child", type=int, default=2_000, help="places a child embeds (--sync-per-child)")
    run.add_argument("--parallel", type=int, default=2, help="children at once in the parallel first sync")
    run = report.command(sub, "adopt", ADOPT, adopt)
    run.add_argument("--rows", type=int, default=100_000, help="users, and place rows (default 100,000)")
    run = report.command(sub, "serving", SERVING, serving)
    run.add_argument("--actions", type=int, nargs="+", default=[1_000_000, 10_000_000], help="actions loaded")
    run.add_argument("--calls", type=int, default=1_000, help="timed calls per size, alone")
    report.run(parser, argv)


if __name__ == "__main__":
    main()
