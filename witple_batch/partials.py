"""The shard partial format (witple-partial-v2): written by shard_job, read by reduce_job.

Layout under `runs/<BATCH_ID>/shards/<index:05d>/`:

    users.ids.npy           (U,)   |S   UTF-8 user ids, sorted
    users.counts.npy        (U,4)  i8   click, like, bookmark, other
    users.weight.npy        (U,)   f8   sum of action weights
    users.first_us.npy      (U,)   i8   epoch microseconds, NULL_TIME when unknown
    users.last_us.npy       (U,)   i8
    users.vector_sum.npy    (U,384) f4  sum of weight * place content vector
    places.categories.npy   (P,)   |S   sorted with places.ids by (category, id)
    places.ids.npy          (P,)   |S
    places.counts|weight|first_us|last_us.npy    as for users
    places.content.npy      (P,384) f4  L2-normalised content vectors
    pairs.user.npy          (K,)   i4   index into users, sorted by (user, place)
    pairs.place.npy         (K,)   i4   index into places
    pairs.counts|weight|first_us|last_us.npy     as for users
    files.json              every manifest file: status processed|rejected, reason, record counts
    rejects.jsonl.gz        one line per rejected record or file
    metrics.json            counts, seconds per stage, peak RSS
    _SUCCESS.json           written last: sha256 of every file above, and what made the
                            content vectors (model.onnx sha256, place text version)

Every array is a plain .npy (never pickled); ids are fixed-width UTF-8 bytes. All files
but metrics.json are byte-identical when a shard is rerun on the same input.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from witple_batch.actions import COUNT_COLUMNS
from witple_batch.aggregate import Stats
from witple_batch.model_files import EMBEDDING_DIM

FORMAT = "witple-partial-v2"
SUCCESS_FILE = "_SUCCESS.json"
FILES_FILE = "files.json"
REJECTS_FILE = "rejects.jsonl.gz"
METRICS_FILE = "metrics.json"
STAT_FIELDS = ("counts", "weight", "first_us", "last_us")
_STAT_DTYPES = {"counts": np.int64, "weight": np.float64, "first_us": np.int64, "last_us": np.int64}


class PartialError(Exception):
    """A partial is missing, tampered with or malformed; the reduce must not apply it."""


@dataclass
class ShardPartial:
    user_ids: np.ndarray
    users: Stats
    user_vector_sum: np.ndarray
    place_categories: np.ndarray
    place_ids: np.ndarray
    places: Stats
    place_content: np.ndarray
    pair_user: np.ndarray
    pair_place: np.ndarray
    pairs: Stats
    files: list[dict[str, Any]]
    content_model: str  # sha256 of the model.onnx that embedded place_content
    place_text_version: str


def id_array(values: list[str]) -> np.ndarray:
    """Fixed-width UTF-8 bytes: compact, vectorisable, and safe to load without pickle."""
    encoded = [v.encode("utf-8") for v in values]
    width = max((len(v) for v in encoded), default=1)
    return np.array(encoded, dtype=f"S{max(width, 1)}")


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _arrays(partial: ShardPartial) -> dict[str, np.ndarray]:
    arrays = {
        "users.ids": partial.user_ids,
        "users.vector_sum": partial.user_vector_sum,
        "places.categories": partial.place_categories,
        "places.ids": partial.place_ids,
        "places.content": partial.place_content,
        "pairs.user": partial.pair_user,
        "pairs.place": partial.pair_place,
    }
    for group, stats in (("users", partial.users), ("places", partial.places), ("pairs", partial.pairs)):
        for name in STAT_FIELDS:
            arrays[f"{group}.{name}"] = getattr(stats, name)
    return arrays


def gzip_lines(rows: list[dict[str, Any]]) -> bytes:
    """JSON Lines, gzip with mtime 0 so the bytes depend on the rows alone."""
    raw = b"".join(orjson.dumps(row) + b"\n" for row in rows)
    return gzip.compress(raw, compresslevel=6, mtime=0)


def encode_partial(
    partial: ShardPartial, rejects: list[dict[str, Any]], metrics: dict[str, Any]
) -> list[tuple[str, bytes]]:
    """Every file of the partial, in upload order, `_SUCCESS.json` last."""
    files = [(f"{name}.npy", _npy(array)) for name, array in sorted(_arrays(partial).items())]
    files.append((FILES_FILE, orjson.dumps(partial.files, option=orjson.OPT_SORT_KEYS)))
    files.append((REJECTS_FILE, gzip_lines(rejects)))
    files.append((METRICS_FILE, orjson.dumps(metrics, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)))
    success = {
        "format": FORMAT,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in files},
        "users": len(partial.users),
        "places": len(partial.places),
        "pairs": len(partial.pairs),
        "content_model": partial.content_model,
        "place_text_version": partial.place_text_version,
    }
    files.append((SUCCESS_FILE, orjson.dumps(success, option=orjson.OPT_SORT_KEYS)))
    return files


def parse_success(data: bytes, where: str) -> dict[str, Any]:
    try:
        success = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise PartialError(f"{where}: {SUCCESS_FILE} is not JSON") from None
    if not isinstance(success, dict) or success.get("format") != FORMAT or not isinstance(success.get("files"), dict):
        raise PartialError(f"{where}: {SUCCESS_FILE} is not a {FORMAT} marker")
    if not all(isinstance(success.get(name), str) for name in ("content_model", "place_text_version")):
        raise PartialError(f"{where}: {SUCCESS_FILE} does not say which model and place text made its vectors")
    return success


def verify_checksum(name: str, data: bytes, success: Mapping[str, Any], where: str) -> None:
    expected = success["files"].get(name)
    if expected is None:
        raise PartialError(f"{where}: {name} is not listed in {SUCCESS_FILE}")
    if hashlib.sha256(data).hexdigest() != expected:
        raise PartialError(f"{where}: checksum mismatch for {name}")


def _load(name: str, data: bytes, where: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:  # object arrays need pickle: refused
        raise PartialError(f"{where}: {name} cannot be loaded without pickle: {exc}") from None
    except (OSError, EOFError) as exc:
        raise PartialError(f"{where}: {name} is not a valid .npy file: {exc}") from None


def _check(array: np.ndarray, name: str, kind: str, shape: tuple[int | None, ...], where: str) -> np.ndarray:
    if array.dtype.kind != kind or array.ndim != len(shape):
        raise PartialError(f"{where}: {name} has dtype {array.dtype} and {array.ndim} dims, expected kind {kind!r}")
    if any(want is not None and got != want for got, want in zip(array.shape, shape, strict=True)):
        raise PartialError(f"{where}: {name} has shape {array.shape}, expected {shape}")
    if kind == "f" and not np.isfinite(array).all():
        raise PartialError(f"{where}: {name} holds NaN or infinite values")
    return array


def decode_partial(files: Mapping[str, bytes], success: Mapping[str, Any], where: str) -> ShardPartial:
    """Load and check every array (checksums are the caller's job, before this)."""

    def array(name: str, kind: str, shape: tuple[int | None, ...]) -> np.ndarray:
        key = f"{name}.npy"
        if key not in files:
            raise PartialError(f"{where}: {key} is missing")
        return _check(_load(key, files[key], where), name, kind, shape, where)

    def stats(group: str, n: int) -> Stats:
        loaded = {}
        for field in STAT_FIELDS:
            shape: tuple[int, ...] = (n, COUNT_COLUMNS) if field == "counts" else (n,)
            kind = np.dtype(_STAT_DTYPES[field]).kind
            loaded[field] = array(f"{group}.{field}", kind, shape).astype(_STAT_DTYPES[field], copy=False)
        if (loaded["counts"] < 0).any() or (loaded["weight"] < 0).any():
            raise PartialError(f"{where}: {group} has negative counts or weights")
        return Stats(**loaded)

    user_ids = array("users.ids", "S", (None,))
    n_users = len(user_ids)
    place_ids = array("places.ids", "S", (None,))
    n_places = len(place_ids)
    pair_user = array("pairs.user", "i", (None,))
    n_pairs = len(pair_user)
    pair_place = array("pairs.place", "i", (n_pairs,))
    if n_pairs and (
        pair_user.min() < 0 or pair_user.max() >= n_users or pair_place.min() < 0 or pair_place.max() >= n_places
    ):
        raise PartialError(f"{where}: pairs index outside users or places")
    try:
        file_rows = orjson.loads(files[FILES_FILE])
    except (KeyError, orjson.JSONDecodeError):
        raise PartialError(f"{where}: {FILES_FILE} is missing or not JSON") from None
    return ShardPartial(
        user_ids=user_ids,
        users=stats("users", n_users),
        user_vector_sum=array("users.vector_sum", "f", (n_users, EMBEDDING_DIM)),
        place_categories=array("places.categories", "S", (n_places,)),
        place_ids=place_ids,
        places=stats("places", n_places),
        place_content=array("places.content", "f", (n_places, EMBEDDING_DIM)),
        pair_user=pair_user.astype(np.int64),
        pair_place=pair_place.astype(np.int64),
        pairs=stats("pairs", n_pairs),
        files=file_rows,
        content_model=success["content_model"],
        place_text_version=success["place_text_version"],
    )
