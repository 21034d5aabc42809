"""Per-user, per-place and per-(user, place) aggregates, vectorised with numpy.

The same Stats layout serves the shard (from actions) and the reduce (merging shards), so
counts, weights and first/last times merge by one rule everywhere.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np

from witple_batch.actions import COUNT_COLUMNS, Action

NULL_TIME = np.iinfo(np.int64).min  # "no parseable action time" in every time array
_NO_FIRST = np.iinfo(np.int64).max
VECTOR_CHUNK_ROWS = 16_384  # bounds the (rows, 384) temporary of weighted_row_sums


@dataclass
class Stats:
    counts: np.ndarray  # (n, 4) int64: click, like, bookmark, other
    weight: np.ndarray  # (n,) float64: sum of action weights (the vector's denominator)
    first_us: np.ndarray  # (n,) int64 epoch microseconds, NULL_TIME when unknown
    last_us: np.ndarray

    def __len__(self) -> int:
        return len(self.weight)


def group_stats(
    codes: np.ndarray, n: int, counts: np.ndarray, weight: np.ndarray, first_us: np.ndarray, last_us: np.ndarray
) -> Stats:
    """Sum counts and weights and take min/max times of the rows that share a code."""
    summed = np.empty((n, COUNT_COLUMNS), dtype=np.int64)
    for column in range(COUNT_COLUMNS):
        # float64 bincount is exact for counts below 2**53
        summed[:, column] = np.bincount(codes, weights=counts[:, column], minlength=n)
    first = np.full(n, _NO_FIRST, dtype=np.int64)
    has_first = first_us != NULL_TIME
    np.minimum.at(first, codes[has_first], first_us[has_first])
    first[first == _NO_FIRST] = NULL_TIME
    last = np.full(n, NULL_TIME, dtype=np.int64)
    np.maximum.at(last, codes, last_us)
    return Stats(
        counts=summed,
        weight=np.bincount(codes, weights=weight, minlength=n).astype(np.float64),
        first_us=first,
        last_us=last,
    )


def weighted_row_sums(
    target: np.ndarray, source: np.ndarray, weight: np.ndarray, rows: np.ndarray, n_targets: int
) -> np.ndarray:
    """out[t] = sum of weight[i] * rows[source[i]] over i with target[i] == t, in float64, chunked."""
    out = np.zeros((n_targets, rows.shape[1]), dtype=np.float64)
    for start in range(0, len(target), VECTOR_CHUNK_ROWS):
        order = np.argsort(target[start : start + VECTOR_CHUNK_ROWS], kind="stable") + start
        chunk_target = target[order]
        weighted = rows[source[order]].astype(np.float64) * weight[order, None]
        # segment sums over runs of equal targets (reduceat), then one scatter per distinct target
        starts = np.flatnonzero(np.r_[True, chunk_target[1:] != chunk_target[:-1]])
        out[chunk_target[starts]] += np.add.reduceat(weighted, starts, axis=0)
    return out


@dataclass
class ActionColumns:
    """Accepted actions as compact columns while a shard reads its files.

    Ids become small integer codes as they arrive (a dict lookup per record), so memory
    grows with distinct users and places, not with the length of the id strings.
    """

    user_codes: dict[str, int] = field(default_factory=dict)
    place_codes: dict[tuple[str, str], int] = field(default_factory=dict)
    user: array = field(default_factory=lambda: array("i"))
    place: array = field(default_factory=lambda: array("i"))
    type_code: array = field(default_factory=lambda: array("b"))
    time_us: array = field(default_factory=lambda: array("q"))

    def add(self, action: Action) -> None:
        self.user.append(self.user_codes.setdefault(action.user_id, len(self.user_codes)))
        key = (action.place_category, action.place_id)
        self.place.append(self.place_codes.setdefault(key, len(self.place_codes)))
        self.type_code.append(action.type_code)
        self.time_us.append(NULL_TIME if action.time_us is None else action.time_us)

    def __len__(self) -> int:
        return len(self.type_code)


@dataclass
class Aggregates:
    user_ids: list[str]  # sorted
    users: Stats
    place_keys: list[tuple[str, str]]  # sorted (category, place_id)
    places: Stats
    pair_user: np.ndarray  # (k,) int32 index into user_ids, sorted by (user, place)
    pair_place: np.ndarray  # (k,) int32 index into place_keys
    pairs: Stats


def _sorted_codes(codes: dict) -> tuple[list, np.ndarray]:
    """Sorted keys and the map from arrival code to sorted position (determinism)."""
    keys = list(codes)
    order = sorted(range(len(keys)), key=keys.__getitem__)
    remap = np.empty(len(keys), dtype=np.int64)
    remap[order] = np.arange(len(keys))
    return [keys[i] for i in order], remap


def aggregate(columns: ActionColumns, type_weights: np.ndarray) -> Aggregates:
    """type_weights: (4,) weight per type code (click, like, bookmark, other)."""
    user_ids, user_remap = _sorted_codes(columns.user_codes)
    place_keys, place_remap = _sorted_codes(columns.place_codes)
    user = user_remap[np.frombuffer(columns.user, dtype=np.int32)]
    place = place_remap[np.frombuffer(columns.place, dtype=np.int32)]
    type_code = np.frombuffer(columns.type_code, dtype=np.int8).astype(np.int64)
    times = np.frombuffer(columns.time_us, dtype=np.int64)
    one_hot = np.zeros((len(type_code), COUNT_COLUMNS), dtype=np.int8)
    one_hot[np.arange(len(type_code)), type_code] = 1
    weight = type_weights[type_code]

    pair_code = user * max(len(place_keys), 1) + place
    pair_keys, pair_index = np.unique(pair_code, return_inverse=True)
    return Aggregates(
        user_ids=user_ids,
        users=group_stats(user, len(user_ids), one_hot, weight, times, times),
        place_keys=place_keys,
        places=group_stats(place, len(place_keys), one_hot, weight, times, times),
        pair_user=(pair_keys // max(len(place_keys), 1)).astype(np.int32),
        pair_place=(pair_keys % max(len(place_keys), 1)).astype(np.int32),
        pairs=group_stats(pair_index, len(pair_keys), one_hot, weight, times, times),
    )
