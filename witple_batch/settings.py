"""Reading settings from the environment, validated once at start.

Every job builds a frozen dataclass from these helpers; a missing or bad value raises
ConfigError naming the variable, which the entry point turns into one line and exit code 2.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from urllib.parse import urlparse

EXIT_CONFIG = 2


class PermanentError(Exception):
    """Retrying the job cannot help (exit code 2, which the Batch retry strategy does not retry)."""


class ConfigError(PermanentError):
    """A setting is missing or malformed."""


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
