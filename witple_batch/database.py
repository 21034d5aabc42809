"""The one place psycopg connections are made: retried with backoff, bounded waits, password never logged.

Every connection sets lock_timeout and statement_timeout before its first statement, so no job
waits forever on the main server's locks or runs a statement past its budget; a job that needs
a longer wait for one lock says so for that statement (SET LOCAL).
"""

from __future__ import annotations

import logging
import re

import psycopg
from psycopg import sql
from tenacity import before_sleep_log, retry, retry_if_exception, stop_after_attempt, wait_exponential

from witple_batch.errors import ConfigError
from witple_batch.logs import mask_secrets
from witple_batch.settings import CommonConfig

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 10.0
STATEMENT_TIMEOUT_S = 600.0


# a wrong schema, a refused write or bad data fails the same way on every attempt: exit 2, no retry
PERMANENT_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.ProgrammingError,
    psycopg.DataError,
    psycopg.IntegrityError,
)


# The server answered and refused who we are or where we point: every attempt fails alike, so the
# job stops at once (exit 2) instead of retrying. libpq gives no SQLSTATE for a failed connection.
_REFUSED = re.compile(
    r'FATAL:\s+(.*authentication failed|database ".*" does not exist|role ".*" does not exist'
    r"|no pg_hba\.conf entry|permission denied for database)"
)


class DatabaseUnavailable(Exception):
    """Connecting failed after every retry (the server unreachable, starting or full: worth a retry)."""


class DatabaseRefused(DatabaseUnavailable, ConfigError):
    """The server refused the URL's user, password or database: a setting to fix (exit 2), not retried."""


def _refused(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.OperationalError) and _REFUSED.search(str(exc)) is not None


def set_timeouts(conn: psycopg.Connection, *, lock_s: float, statement_s: float, local: bool = False) -> None:
    scope = sql.SQL("SET LOCAL" if local else "SET")
    for name, seconds in (("lock_timeout", lock_s), ("statement_timeout", statement_s)):
        conn.execute(sql.SQL("{} {} = {}").format(scope, sql.Identifier(name), sql.Literal(f"{int(seconds * 1000)}ms")))


def connect(
    url: str,
    *,
    attempts: int = 5,
    autocommit: bool = False,
    application: str = "witple-batch",
    lock_timeout_s: float = LOCK_TIMEOUT_S,
    statement_timeout_s: float = STATEMENT_TIMEOUT_S,
) -> psycopg.Connection:
    @retry(
        retry=retry_if_exception(lambda exc: isinstance(exc, psycopg.OperationalError) and not _refused(exc)),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.5, max=8),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )
    def attempt() -> psycopg.Connection:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10, application_name=application)
        set_timeouts(conn, lock_s=lock_timeout_s, statement_s=statement_timeout_s)
        conn.autocommit = autocommit
        return conn

    try:
        return attempt()
    except psycopg.OperationalError as exc:
        shown, reason = mask_secrets(url), mask_secrets(str(exc)).strip()
        if _refused(exc):
            raise DatabaseRefused(f"DATABASE_URL {shown} refused: {reason}") from None
        raise DatabaseUnavailable(f"cannot connect to {shown} after {attempts} attempts: {reason}") from None


def connect_for(common: CommonConfig, application: str, *, autocommit: bool = True) -> psycopg.Connection:
    """A job's connection with the job's settings (DATABASE_URL, attempts, timeouts)."""
    if common.database_url is None:
        raise ConfigError("DATABASE_URL is required but not set")
    return connect(
        common.database_url,
        attempts=common.db_connect_attempts,
        autocommit=autocommit,
        application=application,
        lock_timeout_s=common.db_lock_timeout,
        statement_timeout_s=common.db_statement_timeout,
    )
