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

A run that changes the content of many places (a first load, a new model or text version) is
different: inserting rows into an HNSW graph one by one costs about ten times what building it
does. So when a run changes more than a tenth of the places (and at least BULK_MIN_PLACES), the
place index is dropped CONCURRENTLY before the apply and built again CONCURRENTLY after the
commit; meanwhile vector searches still answer, exactly, by a scan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from psycopg import sql

from reduce_job.upsert import CONTENT_DIFFERS
from witple_batch.logs import event
from witple_batch.vector_space import VectorSpace

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


BULK_MIN_PLACES = 1_000
BULK_SHARE = 0.1

# the staged places whose content vector the batch will write, new places included (each an
# index insert): counted before the apply transaction, which builds batch_places from the same rows
CHANGED_CONTENT = f"""
SELECT count(*) FROM (
    SELECT DISTINCT ON (k.place_category, k.place_id) k.place_category, k.place_id, c.text_sha256
    FROM stage_place_keys k JOIN stage_place_content c USING (shard, idx)
    ORDER BY k.place_category, k.place_id, k.shard
) b
LEFT JOIN place_vectors p USING (place_category, place_id)
WHERE p.place_id IS NULL OR {CONTENT_DIFFERS}
"""


def bulk_content_change(conn: psycopg.Connection, space: VectorSpace) -> bool:
    """Whether the staged batch changes so many content vectors that rebuilding the place index
    beats inserting into it."""
    changed = conn.execute(CHANGED_CONTENT, space.sql_params()).fetchone()[0]  # type: ignore[index,arg-type]
    stored = conn.execute(
        "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'place_vectors'::regclass"
    ).fetchone()[0]  # type: ignore[index]
    return changed >= BULK_MIN_PLACES and changed > BULK_SHARE * (stored + changed)


def ensure_index(conn: psycopg.Connection, index: VectorIndex, wanted: bool) -> str:
    """Outside any transaction (autocommit): make the index exist, valid, exactly when wanted."""
    state = _state(conn, index.name)
    name = sql.Identifier(index.name)
    if not wanted:
        if state is None:
            return "absent"
        try:
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(name))
        except psycopg.errors.LockNotAvailable:
            # a drop that timed out may have left it marked invalid: a useless index costs every
            # insert, so it goes after all, or stays valid
            if _state(conn, index.name) is False:
                conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(name))
                return "dropped"
            event(log, f"{index.name} kept (lock timeout); rows go into it one by one", logging.WARNING)
            return "kept"
        return "dropped"
    if state is True:
        return "present"
    if state is False:  # a build that failed earlier left an invalid index
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(name))
    budget = conn.execute("SHOW statement_timeout").fetchone()[0]  # type: ignore[index]
    try:
        # a large build may take longer than a statement's budget: the job's timeout bounds it
        conn.execute("SET statement_timeout = 0")
        conn.execute(
            sql.SQL("CREATE INDEX CONCURRENTLY {} ON {} USING hnsw ({} vector_cosine_ops)").format(
                name, sql.Identifier(index.table), sql.Identifier(index.column)
            )
        )
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(name))  # no invalid index left
        event(
            log,
            f"{index.name} not built this time; the next reduce tries again",
            logging.WARNING,
            error=str(exc),
        )
        return "postponed"
    finally:  # the job's budget back (RESET would be the server's default, often none)
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(budget)))
    return "built"
