"""The FAILED notice a child sends when Batch will not retry it (last attempt, config error, SIGTERM)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from witple_batch import webhook
from witple_batch.config import common_from_env
from witple_batch.logs import event
from witple_batch.settings import ConfigError, env_int, env_str

log = logging.getLogger(__name__)


def notify_failure(env: Mapping[str, str], message: str, final: bool, seconds: float) -> None:
    try:
        common = common_from_env(env)
        attempt = env_int("AWS_BATCH_JOB_ATTEMPT", 1, env, minimum=1)
        index = env_int("AWS_BATCH_JOB_ARRAY_INDEX", 0, env, minimum=0)
    except ConfigError as exc:  # the settings themselves are broken: nowhere to send to
        event(log, f"no FAILED notice sent: {exc}", logging.ERROR)
        return
    if not (final or attempt >= common.job_attempts):
        event(log, "failure will be retried by Batch; no notice sent", attempt=attempt, attempts=common.job_attempts)
        return
    webhook.send_failed(
        common,
        env_str("BATCH_ID", "unknown", env) or "unknown",
        f"shard {index} failed on attempt {attempt}/{common.job_attempts}: {message}",
        seconds,
        {"stage": "shard", "shard": index, "attempt": attempt, "attempts": common.job_attempts},
    )
