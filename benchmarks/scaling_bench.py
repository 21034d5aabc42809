"""How cost grows: one shard and the reduce at three data sizes, users and places held fixed.

    .venv/bin/python -m benchmarks.scaling_bench [--sizes 50000 200000 1000000] [--baseline-max 200000]

Shard time should grow with actions and the reduce with distinct users and places (fixed
here), not with actions. Each size starts on an empty database holding the sample place
catalogue, as benchmarks/e2e_bench.py's day 1: every place met is embedded from its catalogue
text. The baseline (benchmarks/e2e_bench.py's, the original's cost profile) runs at the sizes
up to --baseline-max, in the same run. Writes
benchmarks/figures/scaling.png (actions/s against data size) and prints the table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson

from benchmarks.e2e_bench import BUCKET, baseline, baseline_total, ours
from local_stack.moto_s3 import MotoS3
from local_stack.postgres import LocalPostgres
from local_stack.sample_data import catalogue, ensure_bucket, generate, install_catalogue, upload
from witple_batch.s3 import s3_client

REPO = Path(__file__).resolve().parents[1]
FIGURE = REPO / "benchmarks" / "figures" / "scaling.png"


def plot(rows: list[dict], e2e: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    sizes = [r["actions"] for r in rows]
    ax.plot(sizes, [r["actions"] / r["ours_s"] for r in rows], "o-", label="ours, 1 shard + reduce")
    base = [r for r in rows if r.get("baseline_s")]
    if base:
        ax.plot(
            [r["actions"] for r in base],
            [r["actions"] / r["baseline_s"] for r in base],
            "s--",
            label="baseline (original's cost profile)",
        )
    if e2e is not None:
        base_s = baseline_total(e2e["baseline"])
        ax.plot(
            [e2e["actions"]],
            [e2e["actions"] / base_s],
            "x",
            markersize=10,
            color="tab:red",
            label="baseline, from e2e_bench.py (same data size and machine)",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("actions per run")
    ax.set_ylabel("actions/s (end to end)")
    ax.set_title("Throughput against data size (2 cores, local moto S3 + PostgreSQL)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(FIGURE, dpi=110)


def print_linear_fit(rows: list[dict], key: str, label: str) -> None:
    """Least-squares seconds = fixed + per_action * actions, and how far each size sits from it."""
    import numpy as np

    actions = np.array([r["actions"] for r in rows], dtype=float)
    seconds = np.array([r[key] for r in rows], dtype=float)
    per_action, fixed = np.polyfit(actions, seconds, 1)
    worst = np.max(np.abs(fixed + per_action * actions - seconds) / seconds)
    print(
        f"{label}: {fixed:.1f} s fixed + {per_action * 100_000:.2f} s per 100k actions "
        f"(largest deviation of a size from the line: {worst:.1%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000, 1_000_000])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--places", type=int, default=5_000)
    parser.add_argument(
        "--baseline-max",
        type=int,
        default=0,
        help="run the baseline at sizes up to this (here 169 s at 50k, 291 s at 200k, 550 s at 1M)",
    )
    parser.add_argument(
        "--baseline-from",
        type=Path,
        help="also plot the baseline point of a benchmarks/e2e_bench.py --json file (labelled so)",
    )
    args = parser.parse_args()
    rows = []
    with MotoS3.start() as moto, LocalPostgres.running() as pg:
        os.environ.update(moto.client_env())
        client = s3_client(moto.client_env()["AWS_REGION"])
        ensure_bucket(client, BUCKET, moto.client_env()["AWS_REGION"])
        model_dir = os.environ.get("MODEL_DIR", str(REPO / ".cache" / "model"))
        places = catalogue(args.places)
        for size in args.sizes:
            prefix = f"size-{size}/"
            sample = generate(actions=size, users=args.users, places=args.places, prefix=prefix, seed=size)
            upload(client, BUCKET, sample.files)
            database_url = pg.new_database()
            install_catalogue(database_url, places)  # the main server's place_recommendations, as in production
            env = {
                **moto.client_env(),
                "S3_BUCKET": BUCKET,
                "S3_PREFIX": prefix,
                "MODEL_DIR": model_dir,
                "BATCH_ID": f"scale-{size}",
                "DATABASE_URL": database_url,
            }
            result = ours(env, shards=1)
            report, timings = result["report"], result["timings"]
            stats = report["stats"]
            row = {
                "actions": stats["records_read"],
                "files": stats["files"],
                "shard_s": timings["shards"],
                "reduce_s": timings["reduce"],
                "ours_s": sum(timings.values()),
                "shard_rss": stats["shard_peak_rss_mb"],
                "reduce_rss": stats["reduce_peak_rss_mb"],
                "users": stats["users"],
                "places": stats["places"],
            }
            if size <= args.baseline_max:
                timings = baseline(client, pg.new_database(), threads=2, prefix=prefix)
                row["baseline_s"] = baseline_total(timings)
            rows.append(row)
            print(orjson.dumps(row).decode(), file=sys.stderr, flush=True)
    print(f"users {args.users:,}, places {args.places:,} (fixed); one shard; 2 cores")
    print(
        f"{'actions':>10}{'files':>7}{'shard s':>9}{'shard RSS':>11}{'reduce s':>10}{'reduce RSS':>12}"
        f"{'ours a/s':>10}{'base a/s':>10}{'ratio':>7}"
    )
    for r in rows:
        base = r.get("baseline_s")
        print(
            f"{r['actions']:>10,}{r['files']:>7,}{r['shard_s']:>9.1f}{r['shard_rss']:>9.0f}Mi{r['reduce_s']:>10.1f}"
            f"{r['reduce_rss']:>10.0f}Mi{r['actions'] / r['ours_s']:>10,.0f}"
            + (f"{r['actions'] / base:>10,.0f}{base / r['ours_s']:>6.1f}x" if base else f"{'-':>10}{'-':>7}")
        )
    first, last = rows[0], rows[-1]
    growth = last["actions"] / first["actions"]
    print(
        f"actions x{growth:.0f}: shard time x{last['shard_s'] / first['shard_s']:.1f}, "
        f"reduce time x{last['reduce_s'] / first['reduce_s']:.1f}"
    )
    print_linear_fit(rows, "shard_s", "shard")
    print_linear_fit(rows, "reduce_s", "reduce")
    plot(rows, orjson.loads(args.baseline_from.read_bytes()) if args.baseline_from else None)
    print(f"plot: {FIGURE.relative_to(REPO)}")


if __name__ == "__main__":
    main()
