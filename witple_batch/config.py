"""Settings both jobs read (the seed's names first), validated once at start."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from witple_batch.actions import ACTION_TYPES
from witple_batch.settings import (
    ConfigError,
    env_float,
    env_int,
    env_required,
    env_str,
    env_url,
    partition_root,
    prefix,
)
from witple_batch.signing import MIN_KEY_CHARS

DEFAULT_REGION = "ap-northeast-2"
DEFAULT_BUCKET = "user-actions-data"
DEFAULT_PREFIX = "user-actions/"
DEFAULT_WORK_PREFIX = "batch-work/"
DEFAULT_WEIGHTS = "click=1,like=3,bookmark=5"
_BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class CommonConfig:
    region: str
    s3_bucket: str
    s3_prefix: str
    work_bucket: str
    work_prefix: str
    database_url: str | None
    webhook_url: str | None
    webhook_secret: str | None
    job_id: str
    job_name: str
    attempt: int  # AWS_BATCH_JOB_ATTEMPT, set by Batch
    job_attempts: int  # the job definition's attempts: the last one is final
    webhook_attempts: int
    webhook_timeout: float
    db_connect_attempts: int
    db_lock_timeout: float
    db_statement_timeout: float
    partials_secret: str | None = None  # signs plans and markers (witple_batch/signing.py)

    @property
    def partials_key(self) -> bytes:
        """PARTIALS_SECRET as the HMAC key; the jobs that write or read a run's documents need it."""
        if self.partials_secret is None:
            raise ConfigError("PARTIALS_SECRET is required but not set (it signs every plan and shard marker)")
        if len(self.partials_secret) < MIN_KEY_CHARS:
            raise ConfigError(f"PARTIALS_SECRET must be at least {MIN_KEY_CHARS} characters")
        return self.partials_secret.encode()

    @property
    def s3_input_path(self) -> str:
        return f"s3://{self.s3_bucket}/{self.s3_prefix}"

    @property
    def last_attempt(self) -> bool:
        return self.attempt >= self.job_attempts

    def warnings(self) -> list[str]:
        """What is legal but unwise, said once at start."""
        if self.webhook_url and not self.webhook_secret:
            return ["WEBHOOK_SECRET is not set: notices are sent unsigned"]
        return []


def _bucket(name: str, value: str) -> str:
    if not _BUCKET.match(value):
        raise ConfigError(f"{name} is not a valid S3 bucket name: {value!r}")
    return value


def job_timeout(env: Mapping[str, str] | None = None) -> float:
    """JOB_TIMEOUT_SECONDS, the job definition's attemptDurationSeconds."""
    return env_float("JOB_TIMEOUT_SECONDS", 3600.0, env, minimum=1.0)


def common_from_env(env: Mapping[str, str] | None = None) -> CommonConfig:
    bucket = _bucket("S3_BUCKET", env_str("S3_BUCKET", DEFAULT_BUCKET, env) or DEFAULT_BUCKET)
    job_timeout(env)  # validated at start; the entry point reads it when a SIGTERM comes
    return CommonConfig(
        region=env_str("AWS_REGION", DEFAULT_REGION, env) or DEFAULT_REGION,
        s3_bucket=bucket,
        s3_prefix=partition_root("S3_PREFIX", env_str("S3_PREFIX", DEFAULT_PREFIX, env) or ""),
        work_bucket=_bucket("WORK_BUCKET", env_str("WORK_BUCKET", bucket, env) or bucket),
        work_prefix=prefix(env_str("WORK_PREFIX", DEFAULT_WORK_PREFIX, env) or ""),
        database_url=env_url("DATABASE_URL", env, schemes=("postgresql", "postgres")),
        webhook_url=env_url("WEBHOOK_URL", env, schemes=("http", "https")),
        webhook_secret=env_str("WEBHOOK_SECRET", env=env),
        job_id=env_str("AWS_BATCH_JOB_ID", "local", env) or "local",
        job_name=env_str("AWS_BATCH_JOB_NAME", "witple-batch", env) or "witple-batch",
        attempt=env_int("AWS_BATCH_JOB_ATTEMPT", 1, env, minimum=1),
        job_attempts=env_int("JOB_ATTEMPTS", 3, env, minimum=1, maximum=10),
        webhook_attempts=env_int("WEBHOOK_ATTEMPTS", 5, env, minimum=1, maximum=20),
        webhook_timeout=env_float("WEBHOOK_TIMEOUT_SECONDS", 10.0, env, minimum=0.1),
        db_connect_attempts=env_int("DB_CONNECT_ATTEMPTS", 5, env, minimum=1, maximum=30),
        db_lock_timeout=env_float("DB_LOCK_TIMEOUT_SECONDS", 10.0, env, minimum=0.1),
        db_statement_timeout=env_float("DB_STATEMENT_TIMEOUT_SECONDS", 1800.0, env, minimum=1.0),
        partials_secret=env_str("PARTIALS_SECRET", env=env),
    )


def validate_batch_id(value: str, name: str = "BATCH_ID") -> str:
    if not _BATCH_ID.match(value):
        raise ConfigError(f"{name} must match {_BATCH_ID.pattern} (letters, digits, . _ -), got {value!r}")
    return value


def required_batch_id(env: Mapping[str, str] | None = None) -> str:
    return validate_batch_id(env_required("BATCH_ID", env))


def new_batch_id() -> str:
    return f"batch-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(4)}"


def parse_weights(raw: str, name: str = "ACTION_WEIGHTS") -> dict[str, float]:
    """`click=1,like=3,bookmark=5` -> weight per known type; unknown types always weigh 0."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in ACTION_TYPES:
            raise ConfigError(f"{name} entries must be <{'|'.join(ACTION_TYPES)}>=<number>, got {part!r}")
        try:
            weight = float(value)
        except ValueError:
            raise ConfigError(f"{name}: weight for {key} is not a number: {value!r}") from None
        if not 0 <= weight < 1e6:
            raise ConfigError(f"{name}: weight for {key} must be between 0 and 1e6")
        weights[key] = weight
    if missing := set(ACTION_TYPES) - set(weights):
        raise ConfigError(f"{name} lacks a weight for {', '.join(sorted(missing))}")
    return {key: weights[key] for key in ACTION_TYPES}
