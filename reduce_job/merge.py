"""Merging shard partials into one batch result, vectorised, shard by shard.

Memory holds the merged distinct users, places and pairs plus one shard, whatever the
number of shards. Ids are matched with np.unique over fixed-width bytes, never per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from witple_batch.aggregate import Stats, group_stats, weighted_row_sums
from witple_batch.model_files import EMBEDDING_DIM
from witple_batch.partials import PartialError, ShardPartial

KEY_SEPARATOR = b"\x1f"  # control characters are rejected in ids, so this cannot occur inside one


def _empty_stats() -> Stats:
    return Stats(
        counts=np.zeros((0, 4), np.int64),
        weight=np.zeros(0, np.float64),
        first_us=np.zeros(0, np.int64),
        last_us=np.zeros(0, np.int64),
    )


def _concat(a: Stats, b: Stats) -> tuple[np.ndarray, ...]:
    return (
        np.concatenate([a.counts, b.counts]),
        np.concatenate([a.weight, b.weight]),
        np.concatenate([a.first_us, b.first_us]),
        np.concatenate([a.last_us, b.last_us]),
    )


def _common_dtype(a: np.dtype, b: np.dtype) -> np.dtype:
    """Widest fixed-width bytes type for plain keys, or per field for (user, place) pair keys."""
    if a.names:
        return np.dtype([(name, f"S{max(a[name].itemsize, b[name].itemsize, 1)}") for name in a.names])
    return np.dtype(f"S{max(a.itemsize, b.itemsize, 1)}")


def _union(a_keys: np.ndarray, b_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted union and where each side's rows land in it."""
    dtype = _common_dtype(a_keys.dtype, b_keys.dtype)
    keys, inverse = np.unique(np.concatenate([a_keys.astype(dtype), b_keys.astype(dtype)]), return_inverse=True)
    return keys, inverse[: len(a_keys)], inverse[len(a_keys) :]


def make_pair_keys(users: np.ndarray, places: np.ndarray) -> np.ndarray:
    keys = np.empty(len(users), dtype=[("user", users.dtype), ("place", places.dtype)])
    keys["user"] = users
    keys["place"] = places
    return keys


def make_place_keys(categories: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return np.char.add(np.char.add(categories, KEY_SEPARATOR), ids)


def split_place_keys(keys: np.ndarray) -> tuple[list[str], list[str]]:
    parts = [k.split(KEY_SEPARATOR, 1) for k in keys.tolist()]
    return [p[0].decode("utf-8") for p in parts], [p[1].decode("utf-8") for p in parts]


@dataclass
class BatchResult:
    user_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, "S1"))
    users: Stats = field(default_factory=_empty_stats)
    user_vector_sum: np.ndarray = field(default_factory=lambda: np.zeros((0, EMBEDDING_DIM), np.float64))
    place_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, "S1"))  # category \x1f id
    places: Stats = field(default_factory=_empty_stats)
    place_content: np.ndarray = field(default_factory=lambda: np.zeros((0, EMBEDDING_DIM), np.float32))
    pair_keys: np.ndarray = field(default_factory=lambda: make_pair_keys(np.zeros(0, "S1"), np.zeros(0, "S1")))
    pairs: Stats = field(default_factory=_empty_stats)
    files: list[dict[str, Any]] = field(default_factory=list)
    shards: int = 0
    content_model: str | None = None  # what made place_content: the same for every shard
    place_text_version: str | None = None

    def add(self, partial: ShardPartial) -> None:
        origin = (partial.content_model, partial.place_text_version)
        if self.shards and origin != (self.content_model, self.place_text_version):
            # one batch, one vector space: mixing two models' vectors would corrupt every mean
            raise PartialError(
                f"shards disagree on what made their content vectors: {origin} vs "
                f"{(self.content_model, self.place_text_version)} (model sha256, place text version)"
            )
        self.content_model, self.place_text_version = origin
        self.user_keys, self.users, self.user_vector_sum = _merge_side(
            self.user_keys,
            self.users,
            self.user_vector_sum,
            partial.user_ids,
            partial.users,
            partial.user_vector_sum.astype(np.float64),
            first_wins=False,
        )
        shard_places = make_place_keys(partial.place_categories, partial.place_ids)
        self.place_keys, self.places, self.place_content = _merge_side(
            self.place_keys,
            self.places,
            self.place_content,
            shard_places,
            partial.places,
            partial.place_content,
            first_wins=True,
        )
        shard_pairs = make_pair_keys(partial.user_ids[partial.pair_user], shard_places[partial.pair_place])
        self.pair_keys, self.pairs, _ = _merge_side(
            self.pair_keys, self.pairs, None, shard_pairs, partial.pairs, None, first_wins=True
        )
        self.files.extend(partial.files)
        self.shards += 1

    def pair_indexes(self) -> tuple[np.ndarray, np.ndarray]:
        """Each pair's row in user_keys and place_keys (pairs sort by user, then place)."""
        return (
            np.searchsorted(self.user_keys, self.pair_keys["user"].astype(self.user_keys.dtype)),
            np.searchsorted(self.place_keys, self.pair_keys["place"].astype(self.place_keys.dtype)),
        )

    def place_behavior(self, pair_user: np.ndarray, pair_place: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per place: sum over its users of w_up * S_u, and of w_up * W_u (mergeable like users)."""
        sums = weighted_row_sums(pair_place, pair_user, self.pairs.weight, self.user_vector_sum, len(self.place_keys))
        weight = np.bincount(
            pair_place, weights=self.pairs.weight * self.users.weight[pair_user], minlength=len(self.place_keys)
        )
        return sums, weight


def _merge_side(
    keys: np.ndarray,
    stats: Stats,
    vectors: np.ndarray | None,
    new_keys: np.ndarray,
    new_stats: Stats,
    new_vectors: np.ndarray | None,
    *,
    first_wins: bool,
) -> tuple[np.ndarray, Stats, np.ndarray | None]:
    """Union of two sorted key sets. Vectors add up (sums) or, with first_wins, keep the earliest."""
    merged_keys, old_at, new_at = _union(keys, new_keys)
    codes = np.concatenate([old_at, new_at])
    merged = group_stats(codes, len(merged_keys), *_concat(stats, new_stats))
    if vectors is None or new_vectors is None:
        return merged_keys, merged, None
    out = np.zeros((len(merged_keys), vectors.shape[1]), dtype=vectors.dtype)
    if first_wins:
        out[new_at] = new_vectors
        out[old_at] = vectors  # earlier shards win: deterministic content vectors
    else:
        out[old_at] += vectors  # each side maps to distinct rows, so += is a plain scatter
        out[new_at] += new_vectors
    return merged_keys, merged, out
