"""The HNSW indexes, kept valid for readers at every moment.

The place index (content_vector) is kept row by row: a batch replaces a content vector only for
new places and changed texts, and every other update keeps the stored value, so it can be a HOT
update that never touches the index. 001 creates it on a fresh database; on the main server's
adopted tables the first reduce builds it, CONCURRENTLY, after its commit. Nothing is dropped or
rebuilt inside the reduce transaction: DROP INDEX takes an ACCESS EXCLUSIVE lock that would
make the main server's place queries wait for the whole transaction.

The user index is optional (USER_VECTOR_INDEX=hnsw): built or dropped CONCURRENTLY after the
commit, so readers and writers keep going; a build that cannot get its locks in time leaves no
invalid index behind and is tried again by the next reduce.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from psycopg import sql

from witple_batch.logs import event

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VectorIndex:
    name: str
    table: str
    column: str


PLACE_INDEX = VectorIndex("place_vectors_content_hnsw", "place_vectors", "content_vector")
USER_INDEX = VectorIndex("user_behavior_vectors_hnsw", "user_behavior_vectors", "behavior_vector")


def _state(conn: psycopg.Connection, name: str) -> bool | None:
    """None when the index does not exist, else whether it is valid."""
    row = conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s", (name,)
    ).fetchone()
    return None if row is None else bool(row[0])


def ensure_index(conn: psycopg.Connection, index: VectorIndex, wanted: bool) -> str:
    """Outside any transaction (autocommit): make the index exist, valid, exactly when wanted."""
    state = _state(conn, index.name)
    name = sql.Identifier(index.name)
    if not wanted:
        if state is not None:
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(name))
            return "dropped"
        return "absent"
    if state is True:
        return "present"
    if state is False:  # a build that failed earlier left an invalid index
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(name))
    try:
        conn.execute(
            sql.SQL("CREATE INDEX CONCURRENTLY {} ON {} USING hnsw ({} vector_cosine_ops)").format(
                name, sql.Identifier(index.table), sql.Identifier(index.column)
            )
        )
    except psycopg.errors.LockNotAvailable as exc:
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(name))
        event(
            log,
            f"{index.name} not built this time (lock timeout); the next reduce tries again",
            logging.WARNING,
            error=str(exc),
        )
        return "deferred"
    return "built"
