"""The shard partial format (witple-partial-v3): written by shard_job, read by reduce_job.

Layout under `runs/<BATCH_ID>/shards/<index:05d>/`:

    users.id_offsets.npy       (U+1,)  i8   where each user id starts in users.id_utf8 (ids sorted)
    users.id_utf8.npy          (B,)    u1   the UTF-8 bytes of every user id, one after another
    places.category_offsets.npy, places.category_utf8.npy   the same for categories
    places.id_offsets.npy, places.id_utf8.npy               and place ids; places sorted by (category, id)
    places.content.npy         (P,384) f4   L2-normalised content vectors
    places.text_sha256.npy     (P,32)  u1   sha256 of the place text each vector embeds
    places.catalogued.npy      (P,)    u1   1 when the catalogue knew the place, 0 for a fallback text
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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from witple_batch.actions import COUNT_COLUMNS
from witple_batch.model_files import EMBEDDING_DIM
from witple_batch.settings import PermanentError

FORMAT = "witple-partial-v3"
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
    place_catalogued: np.ndarray  # (P,) uint8: 1 when the catalogue knew the place
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


def strings(offsets: np.ndarray, utf8: np.ndarray, where: str) -> list[str]:
    blob = utf8.tobytes()
    bounds = offsets.tolist()
    try:
        return [blob[a:b].decode("utf-8") for a, b in itertools.pairwise(bounds)]
    except UnicodeDecodeError:
        raise PartialError(f"{where}: an id is not valid UTF-8") from None


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _arrays(partial: ShardPartial) -> dict[str, np.ndarray]:
    arrays = {
        "places.content": partial.place_content,
        "places.text_sha256": partial.place_text_sha256,
        "places.catalogued": partial.place_catalogued,
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


def encode_partial(partial: ShardPartial) -> list[tuple[str, bytes]]:
    """The arrays and files.json, in upload order (rejects, metrics and the marker come from the writer)."""
    files = [(f"{name}.npy", _npy(array)) for name, array in sorted(_arrays(partial).items())]
    files.append((FILES_FILE, orjson.dumps(partial.files, option=orjson.OPT_SORT_KEYS)))
    return files


def success_marker(partial: ShardPartial, digests: Mapping[str, str]) -> bytes:
    """Written last: a shard is done exactly when this exists."""
    success = {
        "format": FORMAT,
        "files": dict(digests),
        "users": len(partial.user_ids),
        "places": len(partial.place_ids),
        "pairs": len(partial.pair_user),
        "content_model": partial.content_model,
        "place_text_version": partial.place_text_version,
    }
    return orjson.dumps(success, option=orjson.OPT_SORT_KEYS)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    if sha256_hex(data) != expected:
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

    def string_array(name: str) -> list[str]:
        offsets = array(f"{name}_offsets", "i", (None,))
        utf8 = array(f"{name}_utf8", "u", (None,))
        if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(utf8) or (np.diff(offsets) < 0).any():
            raise PartialError(f"{where}: {name}_offsets do not describe {name}_utf8")
        return strings(offsets, utf8, where)

    user_ids = string_array("users.id")
    categories = string_array("places.category")
    place_ids = string_array("places.id")
    if len(categories) != len(place_ids):
        raise PartialError(f"{where}: places.category and places.id differ in length")
    n_places = len(place_ids)
    pair_user = array("pairs.user", "i", (None,))
    n_pairs = len(pair_user)
    pair_place = array("pairs.place", "i", (n_pairs,))
    if n_pairs and (
        pair_user.min() < 0 or pair_user.max() >= len(user_ids) or pair_place.min() < 0 or pair_place.max() >= n_places
    ):
        raise PartialError(f"{where}: pairs index outside users or places")
    counts = array("pairs.counts", "i", (n_pairs, COUNT_COLUMNS))
    if (counts < 0).any():
        raise PartialError(f"{where}: pairs have negative counts")
    try:
        file_rows = orjson.loads(files[FILES_FILE])
    except (KeyError, orjson.JSONDecodeError):
        raise PartialError(f"{where}: {FILES_FILE} is missing or not JSON") from None
    if not isinstance(file_rows, list) or not all(isinstance(r, dict) and "key" in r for r in file_rows):
        raise PartialError(f"{where}: {FILES_FILE} is not a list of file rows")
    return ShardPartial(
        user_ids=user_ids,
        place_categories=categories,
        place_ids=place_ids,
        place_content=array("places.content", "f", (n_places, EMBEDDING_DIM)).astype(np.float32, copy=False),
        place_text_sha256=array("places.text_sha256", "u", (n_places, SHA256_BYTES)),
        place_catalogued=array("places.catalogued", "u", (n_places,)),
        pair_user=pair_user.astype(np.int64),
        pair_place=pair_place.astype(np.int64),
        pair_counts=counts.astype(np.int64, copy=False),
        pair_first_us=array("pairs.first_us", "i", (n_pairs,)).astype(np.int64, copy=False),
        pair_last_us=array("pairs.last_us", "i", (n_pairs,)).astype(np.int64, copy=False),
        files=file_rows,
        content_model=success["content_model"],
        place_text_version=success["place_text_version"],
    )
