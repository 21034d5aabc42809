"""A shard's actions folded into one row per (user, place): counts by type and first/last time.

Per-user and per-place totals are sums over these pairs, so the pairs are all a shard needs to
report; the reduce sums them across shards in PostgreSQL.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np

from shard_job.actions import Action
from witple_batch.vector_space import COUNT_COLUMNS

NULL_TIME = np.iinfo(np.int64).min  # "no parseable action time" in every time array
_NO_FIRST = np.iinfo(np.int64).max


@dataclass
class ActionColumns:
    """Accepted actions as compact columns while a shard reads its files.

    Ids become small integer codes as they arrive (a dict lookup per record), so memory
    grows with the shard's distinct users and places, not with the length of its actions' ids.
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
    place_keys: list[tuple[str, str]]  # sorted (category, place_id)
    pair_user: np.ndarray  # (k,) int32 index into user_ids, sorted by (user, place)
    pair_place: np.ndarray  # (k,) int32 index into place_keys
    pair_counts: np.ndarray  # (k, 4) int64: click, like, bookmark, other
    pair_first_us: np.ndarray  # (k,) int64, NULL_TIME when no action of the pair had a time
    pair_last_us: np.ndarray


def _sorted_codes(codes: dict) -> tuple[list, np.ndarray]:
    """Sorted keys and the map from arrival code to sorted position (determinism)."""
    keys = list(codes)
    order = sorted(range(len(keys)), key=keys.__getitem__)
    remap = np.empty(len(keys), dtype=np.int64)
    remap[order] = np.arange(len(keys))
    return [keys[i] for i in order], remap


def aggregate(columns: ActionColumns) -> Aggregates:
    user_ids, user_remap = _sorted_codes(columns.user_codes)
    place_keys, place_remap = _sorted_codes(columns.place_codes)
    user = user_remap[np.frombuffer(columns.user, dtype=np.int32)]
    place = place_remap[np.frombuffer(columns.place, dtype=np.int32)]
    type_code = np.frombuffer(columns.type_code, dtype=np.int8).astype(np.int64)
    times = np.frombuffer(columns.time_us, dtype=np.int64)

    width = max(len(place_keys), 1)
    pair_keys, pair_index = np.unique(user * width + place, return_inverse=True)
    n = len(pair_keys)
    counts = np.bincount(pair_index * COUNT_COLUMNS + type_code, minlength=n * COUNT_COLUMNS)
    first = np.full(n, _NO_FIRST, dtype=np.int64)
    timed = times != NULL_TIME
    np.minimum.at(first, pair_index[timed], times[timed])
    first[first == _NO_FIRST] = NULL_TIME
    last = np.full(n, NULL_TIME, dtype=np.int64)
    np.maximum.at(last, pair_index, times)
    return Aggregates(
        user_ids=user_ids,
        place_keys=place_keys,
        pair_user=(pair_keys // width).astype(np.int32),
        pair_place=(pair_keys % width).astype(np.int32),
        pair_counts=counts.reshape(n, COUNT_COLUMNS).astype(np.int64),
        pair_first_us=first,
        pair_last_us=last,
    )
