"""The one place psycopg connections are made: retried with backoff, password never logged."""

from __future__ import annotations

import logging

import psycopg
from tenacity import before_sleep_log, retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from witple_batch.logs import mask_secrets

log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """Connecting failed after every retry."""


def connect(
    url: str, *, attempts: int = 5, autocommit: bool = False, application: str = "witple-batch"
) -> psycopg.Connection:
    @retry(
        retry=retry_if_exception_type(psycopg.OperationalError),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.5, max=8),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )
    def attempt() -> psycopg.Connection:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10, application_name=application)

    try:
        return attempt()
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot connect to {mask_secrets(url)} after {attempts} attempts: {mask_secrets(str(exc)).strip()}"
        ) from None
