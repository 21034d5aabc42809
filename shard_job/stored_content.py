"""Content vectors the database already holds, so a shard embeds only places new to it.

A content vector is a function of the model and the place text alone; a stored vector made by
the same model sha256 from a text with the same sha256 is therefore byte for byte what
embedding would give (the embedder is batch-independent). Day to day most places were seen
before, so this removes most of the embed stage and every shard's repeat of it. It is an
optimisation only: when the lookup fails the shard embeds everything and logs why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from witple_batch.logs import event, mask_secrets
from witple_batch.model_files import EMBEDDING_DIM

log = logging.getLogger(__name__)

LOOKUP_CHUNK = 20_000  # keys per query: bounds the statement and the result held at once

LOOKUP = """
SELECT k.n - 1, p.content_vector
FROM unnest(%(categories)s::text[], %(ids)s::text[], %(hashes)s::bytea[])
     WITH ORDINALITY AS k(category, place_id, sha, n)
JOIN place_vectors p ON p.place_category = k.category AND p.place_id = k.place_id
WHERE p.content_model = %(model)s AND p.place_text_version = %(text_version)s
  AND p.content_text_sha256 = k.sha AND p.content_vector IS NOT NULL
"""


@dataclass(frozen=True)
class StoredContent:
    rows: np.ndarray  # (n,) int64 positions in the looked-up keys
    vectors: np.ndarray  # (n, 384) float32

    @classmethod
    def none(cls) -> StoredContent:
        return cls(np.zeros(0, np.int64), np.zeros((0, EMBEDDING_DIM), np.float32))


def stored_content(
    conn: psycopg.Connection | None, keys: list[tuple[str, str]], hashes: list[bytes], model: str, text_version: str
) -> StoredContent:
    """Stored vectors for the (category, place id) keys whose text hash, model and text version match."""
    if conn is None or not keys:
        return StoredContent.none()
    try:
        with conn.transaction():
            register_vector(conn)
            return _lookup(conn, keys, hashes, model, text_version)
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
        event(log, "no stored content vectors yet (schema not migrated); embedding every place")
    except psycopg.Error as exc:
        event(
            log,
            "stored content vectors unavailable; embedding every place",
            level=logging.WARNING,
            error=mask_secrets(str(exc)).strip(),
        )
    return StoredContent.none()


def _lookup(
    conn: psycopg.Connection, keys: list[tuple[str, str]], hashes: list[bytes], model: str, text_version: str
) -> StoredContent:
    rows: list[int] = []
    vectors: list[np.ndarray] = []
    with conn.cursor(binary=True) as cursor:
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[start : start + LOOKUP_CHUNK]
            cursor.execute(
                LOOKUP,
                {
                    "categories": [category for category, _ in chunk],
                    "ids": [place_id for _, place_id in chunk],
                    "hashes": hashes[start : start + LOOKUP_CHUNK],
                    "model": model,
                    "text_version": text_version,
                },
            )
            for row, vector in cursor:
                rows.append(start + row)
                vectors.append(vector.to_numpy())
    if not rows:
        return StoredContent.none()
    return StoredContent(np.asarray(rows, dtype=np.int64), np.stack(vectors).astype(np.float32, copy=False))
