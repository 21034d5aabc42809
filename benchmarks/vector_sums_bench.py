"""The reduce's vector sums: at two gather sizes, and a batch's place deltas gathered two ways.

    .venv/bin/python -m benchmarks.vector_sums_bench [--pairs 226000] [--users 18500] [--places 5000]
        [--changed 0.05]

Pairs shaped like a 200k-action batch's history (users with a handful of pairs each, places drawn
Zipf-like), content vectors and user means of 384 floats. Timed: `vector_sums._sum_by_key` as
the user means call it (keyed by user) and as the place sums call it (keyed by place), with
GATHER_ROWS at the old 4,096 and the current value, alternately (each first in half the rounds),
medians of `--repeat`, same run. Only these sums: the loops over stored behaviour and written
places also step by GATHER_ROWS, a few iterations per 5,000 places either way.

Then a batch's place deltas, sum over pairs of w_new m_new - w_old m_old, at the current
GATHER_ROWS: gathered as two products per pair (before), or, for the pairs the batch did not
change (all but `--changed` of them, a long history), as one product of the user's difference
m_new - m_old (vector_sums._add_block now), alternately, medians of `--repeat`, same run. The
default 5% is a long history's batch; a day-2 batch changes about half its users' pairs
(--changed 0.56 at 200k). Not timed: _add_block's lookup of each user's old mean (a sort and
a search over the block's users, per block and place pass), so the ratio is a little high.

Last, `vector_sums._add_products` over blocks of consecutive users (cut by PAIRS_PER_BLOCK as
BLOCK_STARTS cuts them; its USERS_PER_BLOCK cap never binds at these sizes), keyed by user
(means) and by place (deltas): every pair gathered (DENSE_FILL infinite), every block a matrix
(DENSE_FILL 0, still capped by MATRIX_CELLS) and the current DENSE_FILL, in turn, medians of
`--repeat`, on distinct (user, place) pairs, as the database sends them. Shapes: the pairs
above (users spread evenly, a dozen pairs each over 5,000 places: blocks 0.5-0.6% full; the
sample generator's users are Zipf-like, so its heaviest users' blocks are fuller) and a sweep
of uniform histories on a small catalogue, `--history-pairs` pairs each, every user with
`--per-user` distinct places of `--history-places` (a block's fill is about per-user / places):
where the matrix starts to pay is what DENSE_FILL is set from. One call per block: a batch's
place deltas make up to three (new, old and difference terms), each chosen by its own fill, so
the place ratio is an upper bound for a batch.
"""

from __future__ import annotations

import argparse
import math
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
    parser.add_argument("--changed", type=float, default=0.05, help="share of pairs the batch changed")
    parser.add_argument("--history-pairs", type=int, default=500_000, help="pairs of each uniform history")
    parser.add_argument("--per-user", default="16,24,32,48,64,250", help="distinct places per user, a history each")
    parser.add_argument("--history-places", type=int, default=2_000)
    args = parser.parse_args()
    current = vector_sums.GATHER_ROWS
    current_fill = vector_sums.DENSE_FILL
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
    old_means = means + rng.standard_normal(means.shape).astype(np.float32) * 0.01  # a batch moves means a little
    changed = rng.random(args.pairs) < args.changed
    old_weights = np.where(changed, weights * rng.random(args.pairs), weights)  # a changed pair weighed less before

    every = np.ones(args.pairs, dtype=bool)

    def two_products() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return [(means, every, weights), (old_means, every, -old_weights)]

    def one_difference() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The difference is taken inside the timing, as _add_block takes it per block."""
        return [(means, changed, weights), (old_means, changed, -old_weights), (means - old_means, ~changed, weights)]

    def deltas(terms: Callable[[], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]) -> float:
        started = time.perf_counter()
        delta = np.zeros((args.places, EMBEDDING_DIM))
        for vectors, mask, signed in terms():
            for keys, partial in vector_sums._sum_by_key(places[mask], vectors, users[mask], signed[mask]):
                delta[keys] += partial
        return time.perf_counter() - started

    times: dict[str, list[float]] = {"two": [], "one": []}
    for repeat in range(args.repeat):
        for label, terms in sorted({"two": two_products, "one": one_difference}.items(), reverse=repeat % 2 == 1):
            times[label].append(deltas(terms))
    two, one = (statistics.median(times[label]) for label in ("two", "one"))
    print(f"\nbatch place deltas, {args.changed:.0%} of pairs changed, {current:,} rows a gather:")
    print(f"  two products per pair {two:.3f}s, one difference per unchanged pair {one:.3f}s, {two / one:.2f}x")

    distinct = np.unique(np.c_[users, places], axis=0, return_index=True)[1]  # sorted by user, then place
    shapes = {"day 2 (above)": (users[distinct], places[distinct], weights[distinct])}
    for per_user in (int(n) for n in args.per_user.split(",")):
        history_users = np.repeat(np.arange(args.history_pairs // per_user), per_user)
        history_places = np.concatenate(
            [rng.choice(args.history_places, per_user, replace=False) for _ in range(args.history_pairs // per_user)]
        )
        history_weights = rng.random(len(history_users)) * 5
        shapes[f"{per_user} of {args.history_places:,}"] = (history_users, history_places, history_weights)
    print(f"\nsums over blocks of {vector_sums.PAIRS_PER_BLOCK:,} pairs: all gathered, all matrices, or by fill")
    columns = f"{'gathered':>10}{'matrix':>10}{'by fill':>10}{'ratio':>8}"
    print(f"{'shape':<16}{'keyed by':>10}{'fill (blocks)':>16}{columns}")
    for shape, (block_users, block_places, block_weights) in shapes.items():
        for label, keyed in (("user", True), ("place", False)):
            vectors = rng.standard_normal((block_places.max() + 1 if keyed else block_users.max() + 1, EMBEDDING_DIM))
            run, fills = _blocked(block_users, block_places, block_weights, vectors.astype(np.float32), keyed)
            seconds: dict[float, list[float]] = {math.inf: [], 0.0: [], current_fill: []}
            for repeat in range(args.repeat):
                for dense_fill in sorted(seconds, reverse=repeat % 2 == 1):  # each order in half the rounds
                    vector_sums.DENSE_FILL = dense_fill
                    started = time.perf_counter()
                    run()
                    seconds[dense_fill].append(time.perf_counter() - started)
            vector_sums.DENSE_FILL = current_fill
            gathered, matrix, by_fill = (statistics.median(seconds[key]) for key in (math.inf, 0.0, current_fill))
            fill = f"{min(fills):.1%}-{max(fills):.1%}"
            times = f"{gathered:>9.3f}s{matrix:>9.3f}s{by_fill:>9.3f}s"
            print(f"{shape:<16}{label:>10}{fill:>16}{times}{gathered / by_fill:>7.2f}x")


def _blocked(
    users: np.ndarray, places: np.ndarray, weights: np.ndarray, vectors: np.ndarray, by_user: bool
) -> tuple[Callable[[], None], list[float]]:
    """A run of _add_products over blocks of consecutive users, and each block's fill (pairs / keys x rows).

    `users` sorted; a block is the users whose first pair starts within the same PAIRS_PER_BLOCK, as BLOCK_STARTS.
    """
    _, user_starts = vector_sums._runs(users)
    window = user_starts // vector_sums.PAIRS_PER_BLOCK
    starts = user_starts[np.r_[True, window[1:] != window[:-1]]].tolist()
    bounds = list(zip(starts, [*starts[1:], len(users)], strict=True))
    fills = [(hi - lo) / (len(np.unique(users[lo:hi])) * len(np.unique(places[lo:hi]))) for lo, hi in bounds]

    out = np.full(((users if by_user else places).max() + 1, EMBEDDING_DIM), 0.0)  # its pages written untimed

    def run() -> None:
        for lo, hi in bounds:
            keys, rows_ = (users[lo:hi], places[lo:hi]) if by_user else (places[lo:hi], users[lo:hi])
            vector_sums._add_products(out, keys, vectors, rows_, weights[lo:hi])

    return run, fills


if __name__ == "__main__":
    main()
