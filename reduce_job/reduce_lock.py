"""The reduce lock: every writer of the vectors (a run's apply, a rebuild, a consolidation chunk)
holds it for its transaction, so their read-modify-writes of the sums never interleave."""

from __future__ import annotations

import psycopg

from witple_batch.database import set_timeouts
from witple_batch.schema import REDUCE_LOCK
from witple_batch.settings import CommonConfig


def take_reduce_lock(conn: psycopg.Connection, common: CommonConfig) -> None:
    """Inside a transaction: the reduce lock, held to its end, so no two applies interleave.

    A concurrent reduce holds it for its whole transaction, so this waits up to a statement's
    budget; every statement after it waits for a row lock only DB_LOCK_TIMEOUT_SECONDS.
    """
    set_timeouts(conn, lock_s=common.db_statement_timeout, statement_s=common.db_statement_timeout, local=True)
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (REDUCE_LOCK,))
    set_timeouts(conn, lock_s=common.db_lock_timeout, statement_s=common.db_statement_timeout, local=True)
