"""Versioned migrations, applied idempotently at start; safe when two reduces start at once."""

from __future__ import annotations

import logging
from importlib import resources

import psycopg

from witple_batch.logs import event

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same for every reduce (pg_advisory_xact_lock key).
MIGRATION_LOCK = 7_431_020_001
REDUCE_LOCK = 7_431_020_002


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) sorted by version, from witple_batch/migrations/NNN_name.sql."""
    found = []
    for entry in resources.files("witple_batch.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append((int(version), name, entry.read_text()))
    return sorted(found)


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply what is missing in one transaction under an advisory lock; returns versions applied."""
    applied_now = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations").fetchall()}
        for version, name, sql in migrations():
            if version in done:
                continue
            conn.execute(sql)  # type: ignore[arg-type] - trusted files shipped with the package
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied_now.append(version)
    if applied_now:
        event(log, "schema migrated", versions=applied_now)
    return applied_now
