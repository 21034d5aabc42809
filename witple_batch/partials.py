"""The shard partial format (witple-partial-v4): written by shard_job, read by reduce_job.

Layout under `runs/<BATCH_ID>/shards/<index:05d>/`:

    users.id_offsets.npy       (U+1,)  i8   where each user id starts in users.id_utf8 (ids sorted)
    users.id_utf8.npy          (B,)    u1   the UTF-8 bytes of every user id, one after another
    places.category_offsets.npy, places.category_utf8.npy   the same for categories
    places.id_offsets.npy, places.id_utf8.npy               and place ids; places sorted by (category, id)
    places.content.npy         (P,384) f4   L2-normalised content vectors
    places.text_sha256.npy     (P,32)  u1   sha256 of the place text each vector embeds
    places.catalogue_sha256.npy (P,32) u1   the catalogue fields' fingerprint (CatalogueEntry.sha256),
                                            zeros when the catalogue did not know the place
    pairs.user.npy             (K,)    i4   index into users, sorted by (user, place)
    pairs.place.npy            (K,)    i4   index into places
    pairs.counts.npy           (K,4)   i8   click, like, bookmark, other
    pairs.first_us.npy         (K,)    i8   epoch microseconds, NULL_TIME when unknown
    pairs.last_us.npy          (K,)    i8
    files.json                 every planned file: status processed|rejected|quarantined, counts
    rejects.jsonl.gz           per file: the first rejected records and counts by reason
    metrics.json               counts, seconds per stage, peak RSS
    _SUCCESS.json              written last: sha256 of every file above, and what made the
                               content vectors (model.onnx sha256, place text version)

Per-user and per-place totals are sums over pairs, so the pairs are the whole record of what
happened. Ids are stored back to back with offsets: one long id costs its own bytes, not the
width of every id. Every array is a plain .npy (never pickled). All files but metrics.json
are byte-identical when a shard is rerun on the same input.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

from witple_batch.errors import PermanentError
from witple_batch.model_files import EMBEDDING_DIM
from witple_batch.signing import sign, verify
from witple_batch.vector_space import COUNT_COLUMNS

FORMAT = "witple-partial-v4"
SUCCESS_FILE = "_SUCCESS.json"
FILES_FILE = "files.json"
REJECTS_FILE = "rejects.jsonl.gz"
METRICS_FILE = "metrics.json"
SHA256_BYTES = 32


class PartialError(PermanentError):
    """A partial is missing, tampered with or malformed; the reduce must not apply it (a retry reads the same)."""


@dataclass
class ShardPartial:
    user_ids: list[str]  # sorted
    place_categories: list[str]  # sorted with place_ids by (category, id)
    place_ids: list[str]
    place_content: np.ndarray  # (P, 384) float32
    place_text_sha256: np.ndarray  # (P, 32) uint8
    place_catalogue_sha256: np.ndarray  # (P, 32) uint8: zeros when the catalogue did not know the place
    pair_user: np.ndarray  # (K,) int32
    pair_place: np.ndarray  # (K,) int32
    pair_counts: np.ndarray  # (K, 4) int64
    pair_first_us: np.ndarray  # (K,) int64
    pair_last_us: np.ndarray  # (K,) int64
    files: list[dict[str, Any]]
    content_model: str  # sha256 of the model.onnx that embedded place_content
    place_text_version: str


def string_column(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, utf8): the strings back to back, so storage follows each string's own length."""
    encoded = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return offsets, np.frombuffer(b"".join(encoded), dtype=np.uint8)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _arrays(partial: ShardPartial) -> dict[str, np.ndarray]:
    arrays = {
        "places.content": partial.place_content,
        "places.text_sha256": partial.place_text_sha256,
        "places.catalogue_sha256": partial.place_catalogue_sha256,
        "pairs.user": partial.pair_user,
        "pairs.place": partial.pair_place,
        "pairs.counts": partial.pair_counts,
        "pairs.first_us": partial.pair_first_us,
        "pairs.last_us": partial.pair_last_us,
    }
    for name, values in (
        ("users.id", partial.user_ids),
        ("places.category", partial.place_categories),
        ("places.id", partial.place_ids),
    ):
        arrays[f"{name}_offsets"], arrays[f"{name}_utf8"] = string_column(values)
    return arrays


def encode_partial(partial: ShardPartial) -> Iterator[tuple[str, bytes]]:
    """The arrays and files.json, in upload order (rejects, metrics and the marker come from the
    writer), one encoded at a time: the id columns' UTF-8 bytes are built first, then each array
    is held encoded only until the writer has sent it."""
    arrays = _arrays(partial)
    for name in sorted(arrays):
        yield f"{name}.npy", _npy(arrays.pop(name))  # the id columns' bytes go as they are sent
    yield FILES_FILE, orjson.dumps(partial.files, option=orjson.OPT_SORT_KEYS)


def success_marker(partial: ShardPartial, digests: Mapping[str, str], key: bytes, run_id: str, shard: int) -> bytes:
    """Written last: a shard is done exactly when this exists. Signed with the run key, so its
    checksums say which bytes are the shard's, not only that they arrived whole; it names its
    run and shard, so a marker copied from another run or shard is refused."""
    success = {
        "format": FORMAT,
        "batch_id": run_id,
        "shard": shard,
        "files": dict(digests),
        "users": len(partial.user_ids),
        "places": len(partial.place_ids),
        "pairs": len(partial.pair_user),
        "content_model": partial.content_model,
        "place_text_version": partial.place_text_version,
    }
    return orjson.dumps(sign(success, key), option=orjson.OPT_SORT_KEYS)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_success(data: bytes, where: str, key: bytes) -> dict[str, Any]:
    """A shard's marker, its signature checked; `where` names the object in every error."""
    try:
        success = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise PartialError(f"{where} is not JSON") from None
    if not isinstance(success, dict) or success.get("format") != FORMAT or not isinstance(success.get("files"), dict):
        raise PartialError(f"{where} is not a {FORMAT} marker")
    verify(success, key, where)
    if not all(isinstance(success.get(name), str) for name in ("content_model", "place_text_version")):
        raise PartialError(f"{where} does not say which model and place text made its vectors")
    return success


class Sliceable(Protocol):
    """An array read a slice of rows at a time: an ndarray, or a .npy on disk (reduce_job/spool.py)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __len__(self) -> int: ...

    def __getitem__(self, rows: slice) -> np.ndarray: ...


CHUNK_BYTES = 8 << 20  # what one slice of an array costs, whatever its row width


def chunk_rows(array: Sliceable) -> int:
    return max(1, CHUNK_BYTES // max(1, array.dtype.itemsize * math.prod(array.shape[1:])))


def chunks(array: Sliceable) -> Iterator[np.ndarray]:
    rows = chunk_rows(array)
    for start in range(0, len(array), rows):
        yield array[start : start + rows]


def iter_strings(offsets: Sliceable, utf8: Sliceable, where: str, rows: int = 65_536) -> Iterator[str]:
    """The strings of a string column, `rows` at a time (memory follows one chunk, not the column)."""
    for start in range(0, len(offsets) - 1, rows):
        bounds = offsets[start : min(start + rows, len(offsets) - 1) + 1].tolist()
        blob = utf8[bounds[0] : bounds[-1]].tobytes()
        base = bounds[0]
        try:
            yield from (blob[a - base : b - base].decode("utf-8") for a, b in itertools.pairwise(bounds))
        except UnicodeDecodeError:
            raise PartialError(f"{where}: an id is not valid UTF-8") from None


def _check(array: Sliceable, name: str, kind: str, shape: tuple[int | None, ...], where: str) -> Sliceable:
    if array.dtype.kind != kind or len(array.shape) != len(shape):
        raise PartialError(
            f"{where}: {name} has dtype {array.dtype} and {len(array.shape)} dims, expected kind {kind!r}"
        )
    if any(want is not None and got != want for got, want in zip(array.shape, shape, strict=True)):
        raise PartialError(f"{where}: {name} has shape {array.shape}, expected {shape}")
    return array


# bytes read as bytes, and vectors stored as float32: another width would change what they mean
EXACT_WIDTHS = {
    "users.id_utf8": 1,
    "places.category_utf8": 1,
    "places.id_utf8": 1,
    "places.text_sha256": 1,
    "places.catalogue_sha256": 1,
    "places.content": 4,
}


@dataclass(frozen=True)
class PartialSize:
    users: int
    places: int
    pairs: int


def check_arrays(arrays: Mapping[str, Sliceable], where: str) -> PartialSize:
    """Every array present with the right kind and shape, ids valid UTF-8 with honest offsets,
    pairs inside users and places, counts not negative, vectors finite: read a chunk at a time,
    so checking costs one chunk of memory whatever the partial's size."""

    def array(name: str, kind: str, shape: tuple[int | None, ...]) -> Sliceable:
        if name not in arrays:
            raise PartialError(f"{where}: {name}.npy is missing")
        checked = _check(arrays[name], name, kind, shape, where)
        width = EXACT_WIDTHS.get(name)
        if width is not None and checked.dtype.itemsize != width:
            raise PartialError(f"{where}: {name} has dtype {checked.dtype}, expected {width}-byte items")
        return checked

    def string_count(name: str) -> int:
        offsets = array(f"{name}_offsets", "i", (None,))
        utf8 = array(f"{name}_utf8", "u", (None,))
        honest = len(offsets) > 0 and offsets[0:1][0] == 0 and offsets[len(offsets) - 1 :][0] == len(utf8)
        previous = 0
        for chunk in chunks(offsets) if honest else ():
            honest = honest and chunk[0] >= previous and not (np.diff(chunk) < 0).any()
            previous = chunk[-1]
        if not honest:
            raise PartialError(f"{where}: {name}_offsets do not describe {name}_utf8")
        for _ in iter_strings(offsets, utf8, where):
            pass
        return len(offsets) - 1

    users = string_count("users.id")
    places = string_count("places.category")
    if string_count("places.id") != places:
        raise PartialError(f"{where}: places.category and places.id differ in length")
    pair_user = array("pairs.user", "i", (None,))
    pairs = len(pair_user)
    for name, bound in (("pairs.user", users), ("pairs.place", places)):
        for chunk in chunks(array(name, "i", (pairs,))):
            if chunk.min() < 0 or chunk.max() >= bound:
                raise PartialError(f"{where}: pairs index outside users or places")
    for chunk in chunks(array("pairs.counts", "i", (pairs, COUNT_COLUMNS))):
        if (chunk < 0).any():
            raise PartialError(f"{where}: pairs have negative counts")
    array("pairs.first_us", "i", (pairs,))
    array("pairs.last_us", "i", (pairs,))
    for chunk in chunks(array("places.content", "f", (places, EMBEDDING_DIM))):
        if not np.isfinite(chunk).all():
            raise PartialError(f"{where}: places.content holds NaN or infinite values")
    array("places.text_sha256", "u", (places, SHA256_BYTES))
    array("places.catalogue_sha256", "u", (places, SHA256_BYTES))
    return PartialSize(users, places, pairs)


def file_rows(data: bytes | None, where: str) -> list[dict[str, Any]]:
    try:
        rows = orjson.loads(data) if data is not None else None
    except orjson.JSONDecodeError:
        rows = None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "key" in r for r in rows):
        raise PartialError(f"{where}: {FILES_FILE} is missing or not a list of file rows")
    return rows
