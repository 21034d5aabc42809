"""The reduce's vector sums at two gather sizes: how many pairs' products are summed at once.

    .venv/bin/python -m benchmarks.vector_sums_bench [--pairs 226000] [--users 18500] [--places 5000]

Pairs shaped like a 200k-action batch's history (users with a handful of pairs each, places drawn
Zipf-like), content vectors and user means of 384 floats. Timed: `vector_sums._sum_by_key` as
the user means call it (keyed by user) and as the place sums call it (keyed by place), with
GATHER_ROWS at the old 4,096 and the current value, alternately (each first in half the rounds),
medians of `--repeat`, same run. Only these sums: the loops over stored behaviour and written
places also step by GATHER_ROWS, a few iterations per 5,000 places either way.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from reduce_job import vector_sums
from witple_batch.model_files import EMBEDDING_DIM

OLD_GATHER_ROWS = 4_096


def _seconds(run: Callable[[], None], gather_rows: int) -> float:
    vector_sums.GATHER_ROWS = gather_rows
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=226_000)
    parser.add_argument("--users", type=int, default=18_500)
    parser.add_argument("--places", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    current = vector_sums.GATHER_ROWS
    rng = np.random.default_rng(7)
    users = np.sort(rng.integers(0, args.users, args.pairs))
    places = np.minimum(rng.zipf(1.3, args.pairs) - 1, args.places - 1)
    weights = rng.random(args.pairs) * 5
    content = rng.standard_normal((args.places, EMBEDDING_DIM)).astype(np.float32)
    means = rng.standard_normal((args.users, EMBEDDING_DIM)).astype(np.float32)

    def by_user() -> None:
        for _keys, _sums in vector_sums._sum_by_key(users, content, places, weights):
            pass

    def by_place() -> None:
        for _keys, _sums in vector_sums._sum_by_key(places, means, users, weights):
            pass

    print(f"{args.pairs:,} pairs, {args.users:,} users, {args.places:,} places, medians of {args.repeat}")
    print(f"{'sums keyed by':<16}{f'{OLD_GATHER_ROWS:,} rows':>12}{f'{current:,} rows':>12}{'ratio':>8}")
    try:
        for label, run in (("user (means)", by_user), ("place (deltas)", by_place)):
            times: dict[int, list[float]] = {OLD_GATHER_ROWS: [], current: []}
            for repeat in range(args.repeat):
                for size in sorted(times, reverse=repeat % 2 == 1):  # each size first in half the rounds
                    times[size].append(_seconds(run, size))
            old, new = (statistics.median(times[size]) for size in (OLD_GATHER_ROWS, current))
            print(f"{label:<16}{old:>11.3f}s{new:>11.3f}s{old / new:>7.2f}x")
    finally:
        vector_sums.GATHER_ROWS = current


if __name__ == "__main__":
    main()
