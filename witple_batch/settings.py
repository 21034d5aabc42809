"""Every job's settings from the environment (the seed's names first), validated once at start.

Each job builds a frozen dataclass from these readers; a missing or bad value raises ConfigError
naming the variable, which the entry point turns into one line and exit code 2. CommonConfig is
what every job reads; each package adds its own (shard_job.config, reduce_job.config,
coordinator.config).

Names: BATCH_ID is the seed's name for a run's id; an envelope's `batch_id` is the collection
server's, and AWS Batch is the service.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

from witple_batch.errors import ConfigError

DEFAULT_REGION = "ap-northeast-2"
DEFAULT_BUCKET = "user-actions-data"
DEFAULT_PREFIX = "user-actions/"
DEFAULT_WORK_PREFIX = "batch-work/"
MIN_RUN_KEY_CHARS = 32  # PARTIALS_SECRET: an HMAC-SHA256 key (witple_batch/signing.py)
MAX_AWS_ATTEMPTS = 20  # AWS_MAX_ATTEMPTS' ceiling: more would outlast a job's budget in backoff
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def env_str(name: str, default: str | None = None, env: Mapping[str, str] | None = None) -> str | None:
    value = (os.environ if env is None else env).get(name, "").strip()
    return value or default


def env_required(name: str, env: Mapping[str, str] | None = None) -> str:
    value = env_str(name, env=env)
    if value is None:
        raise ConfigError(f"{name} is required but not set")
    return value


def env_int(
    name: str,
    default: int,
    env: Mapping[str, str] | None = None,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    raw = env_str(name, env=env)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def env_float(name: str, default: float, env: Mapping[str, str] | None = None, *, minimum: float = 0.0) -> float:
    raw = env_str(name, env=env)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    if not value >= minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {raw}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...], env: Mapping[str, str] | None = None) -> str:
    value = (env_str(name, default, env) or default).lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def env_url(name: str, env: Mapping[str, str] | None = None, *, schemes: tuple[str, ...]) -> str | None:
    value = env_str(name, env=env)
    if value is None:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in schemes or not (parsed.netloc or parsed.query):
        raise ConfigError(f"{name} must be a {'/'.join(schemes)} URL")
    try:
        parsed.port  # noqa: B018 - raises on a port that is not a number in 0-65535
    except ValueError:
        raise ConfigError(f"{name} has a bad port") from None
    return value


def prefix(value: str) -> str:
    """S3 prefixes compare as strings: normalise to no leading slash and one trailing slash."""
    value = value.strip("/")
    return f"{value}/" if value else ""


def partition_root(name: str, value: str) -> str:
    """`value` as a prefix the hour partitions sit directly under: the incremental planner lists
    <prefix>year=YYYY/month=MM/day=DD/hour=HH/, so a prefix inside a partition would list nothing."""
    normalised = prefix(value)
    if re.search(r"(^|/)year=\d{4}/", normalised):
        raise ConfigError(
            f"{name} must be the folder holding the year=YYYY/ partitions, got {value!r} (--since/--until pick hours)"
        )
    return normalised


def _bucket(name: str, value: str) -> str:
    if not _BUCKET.match(value):
        raise ConfigError(f"{name} is not a valid S3 bucket name: {value!r}")
    return value


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
    webhook_backoff: float  # the first pause between attempts, doubling each time (at most 30 s)
    db_connect_attempts: int
    db_lock_timeout: float
    db_statement_timeout: float
    partials_secret: str | None = None  # the run key: signs plans and markers (witple_batch/signing.py)

    @property
    def partials_key(self) -> bytes:
        """PARTIALS_SECRET as the HMAC key; the jobs that write or read a run's documents need it."""
        if self.partials_secret is None:
            raise ConfigError("PARTIALS_SECRET is required but not set (it signs every plan and shard marker)")
        if len(self.partials_secret) < MIN_RUN_KEY_CHARS:
            raise ConfigError(f"PARTIALS_SECRET must be at least {MIN_RUN_KEY_CHARS} characters")
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


def job_timeout(env: Mapping[str, str] | None = None) -> float:
    """JOB_TIMEOUT_SECONDS, the job definition's attemptDurationSeconds."""
    return env_float("JOB_TIMEOUT_SECONDS", 3600.0, env, minimum=1.0)


def aws_max_attempts(env: Mapping[str, str] | None = None) -> int | None:
    """AWS_MAX_ATTEMPTS, botocore's own variable: the most attempts an AWS call makes, the first
    included; None when unset (witple_batch.s3 reads it for every client)."""
    if env_str("AWS_MAX_ATTEMPTS", env=env) is None:
        return None
    return env_int("AWS_MAX_ATTEMPTS", 1, env, minimum=1, maximum=MAX_AWS_ATTEMPTS)


def common_from_env(env: Mapping[str, str] | None = None) -> CommonConfig:
    bucket = _bucket("S3_BUCKET", env_str("S3_BUCKET", DEFAULT_BUCKET, env) or DEFAULT_BUCKET)
    job_timeout(env)  # validated at start; the entry point reads it when a SIGTERM comes
    aws_max_attempts(env)  # validated at start, so no S3 client made later (a failure's notice) can refuse it
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
        webhook_backoff=env_float("WEBHOOK_BACKOFF_SECONDS", 1.0, env, minimum=0.0),
        db_connect_attempts=env_int("DB_CONNECT_ATTEMPTS", 5, env, minimum=1, maximum=30),
        db_lock_timeout=env_float("DB_LOCK_TIMEOUT_SECONDS", 10.0, env, minimum=0.1),
        db_statement_timeout=env_float("DB_STATEMENT_TIMEOUT_SECONDS", 1800.0, env, minimum=1.0),
        partials_secret=env_str("PARTIALS_SECRET", env=env),
    )


def validate_run_id(value: str, name: str = "BATCH_ID") -> str:
    if not _RUN_ID.match(value):
        raise ConfigError(f"{name} must match {_RUN_ID.pattern} (letters, digits, . _ -), got {value!r}")
    return value


def required_run_id(env: Mapping[str, str] | None = None) -> str:
    return validate_run_id(env_required("BATCH_ID", env))


def new_run_id() -> str:
    return f"batch-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(4)}"
