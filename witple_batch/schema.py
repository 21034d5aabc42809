"""Versioned migrations, applied at start in one transaction; safe when several jobs start at once.

A migration is `NNN_name.sql` (run as it is) or `NNN_name.py`, whose `steps(conn)` looks at the
database and returns what it must do, so `plan()` can say what would change, and how many rows,
without changing anything (`python -m reduce_job migrate --dry-run`). Every statement runs under
the connection's lock_timeout: a migration that cannot get a table's lock (the main server holds
it in a long query) fails within seconds, naming the table, and nothing is applied.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

from witple_batch.database import set_timeouts
from witple_batch.logs import event

log = logging.getLogger(__name__)

# Every advisory lock key, in one place so no two can meet. Any constant works; it only has to be
# the same for every job.
MIGRATION_LOCK = 7_431_020_001
REDUCE_LOCK = 7_431_020_002
PLAN_LOCK = 7_431_020_003  # planners take turns, so each sees the claims of the one before
NEIGHBOURS_LOCK = 7_431_020_004  # one neighbour maintenance at a time (reduce_job/neighbours.py)
CONSOLIDATION_LOCK = 7_431_020_005  # one place consolidation at a time (reduce_job/consolidate.py)


@dataclass(frozen=True)
class Step:
    description: str
    statement: str | sql.Composable
    rows: int | None = None  # rows it changes, when known before it runs


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    steps: Callable[[psycopg.Connection], list[Step]]


class MigrationLocked(Exception):
    """A migration could not get a lock in time; nothing was applied (worth a retry when the table is idle)."""


def _sql_file(text: str, name: str) -> Callable[[psycopg.Connection], list[Step]]:
    return lambda _conn: [Step(f"run {name}", text)]


def migrations() -> list[Migration]:
    """Every migration shipped in witple_batch/migrations/, sorted by version."""
    found = []
    for entry in resources.files("witple_batch.migrations").iterdir():
        stem, _, suffix = entry.name.partition(".")
        version, _, name = stem.partition("_")  # NNN_name
        if not version.isdigit():
            continue
        if suffix == "sql":
            found.append(Migration(int(version), name, _sql_file(entry.read_text(), entry.name)))
        elif suffix == "py":
            module = importlib.import_module(f"witple_batch.migrations.{stem}")
            found.append(Migration(int(version), name, module.steps))
    return sorted(found, key=lambda m: m.version)


def _applied(conn: psycopg.Connection) -> set[int]:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]  # type: ignore[index]
    if not exists:
        return set()
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations").fetchall()}


def plan(conn: psycopg.Connection) -> list[tuple[Migration, list[Step]]]:
    """What migrate() would do now, read only: each pending migration's steps as the database stands.

    (A step of a later migration is planned before the earlier ones ran: the adoption of the
    main server's tables, for instance, plans against its tables, not against 001's.)
    """
    done = _applied(conn)
    return [(m, m.steps(conn)) for m in migrations() if m.version not in done]


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply what is missing in one transaction under an advisory lock; returns versions applied."""
    applied_now = []
    lock_s = _current_seconds(conn, "lock_timeout")
    statement_s = _current_seconds(conn, "statement_timeout")
    try:
        with conn.transaction():
            # another job may be migrating: wait for it as long as a statement may run
            set_timeouts(conn, lock_s=statement_s, statement_s=statement_s, local=True)
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            set_timeouts(conn, lock_s=lock_s, statement_s=statement_s, local=True)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = _applied(conn)
            for migration in migrations():
                if migration.version in done:
                    continue
                for step in migration.steps(conn):
                    _run(conn, migration, step, lock_s)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (migration.version, migration.name)
                )
                applied_now.append(migration.version)
    except psycopg.errors.LockNotAvailable as exc:
        raise MigrationLocked(str(exc)) from None
    if applied_now:
        event(log, "schema migrated", versions=applied_now)
    return applied_now


def _run(conn: psycopg.Connection, migration: Migration, step: Step, lock_s: float) -> None:
    event(log, "migration step", version=migration.version, step=step.description, rows=step.rows)
    try:
        conn.execute(step.statement)  # type: ignore[arg-type] - trusted statements shipped with the package
    except psycopg.errors.LockNotAvailable:
        raise MigrationLocked(
            f"migration {migration.version:03d} ({migration.name}) could not lock what it changes within "
            f"{lock_s:.0f} s at step '{step.description}': another session (a long read or write) holds it. "
            "Nothing was changed; run it again when the table is idle (python -m reduce_job migrate --dry-run "
            "shows the plan)"
        ) from None


def _current_seconds(conn: psycopg.Connection, setting: str) -> float:
    """A timeout setting of this session in seconds (0 = none)."""
    value = conn.execute(sql.SQL("SELECT current_setting({})").format(sql.Literal(setting))).fetchone()[0]  # type: ignore[index]
    units = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
    for unit in sorted(units, key=len, reverse=True):
        if value.endswith(unit):
            return float(value[: -len(unit)]) * units[unit]
    return float(value) / 1000.0
