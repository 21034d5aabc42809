"""The FAILED notice a child sends when Batch will not retry it (last attempt, config error, SIGTERM)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from witple_batch import webhook
from witple_batch.config import common_from_env
from witple_batch.logs import event
from witple_batch.settings import ConfigError, env_int, env_str

log = logging.getLogger(__name__)


def notify_failure(env: Mapping[str, str], message: str, config_error: bool, seconds: float) -> None:
    try:
        common = common_from_env(env)
        attempt = env_int("AWS_BATCH_JOB_ATTEMPT", 1, env, minimum=1)
    except ConfigError as exc:  # the settings themselves are broken: nowhere to send to
        event(log, f"no FAILED notice sent: {exc}", logging.ERROR)
        return
    terminated = message.startswith("Terminated")
    if not (config_error or terminated or attempt >= common.job_attempts):
        event(log, "failure will be retried by Batch; no notice sent", attempt=attempt, attempts=common.job_attempts)
        return
    if common.webhook_url is None:
        return
    index = env_int("AWS_BATCH_JOB_ARRAY_INDEX", 0, env, minimum=0)
    body = webhook.payload(
        job_id=common.job_id,
        job_name=common.job_name,
        status=webhook.FAILED,
        batch_id=env_str("BATCH_ID", "unknown", env) or "unknown",
        processed_records=0,
        processing_time_seconds=seconds,
        s3_input_path=common.s3_input_path,
        error_message=f"shard {index} failed on attempt {attempt}/{common.job_attempts}: {message}",
        metadata={"stage": "shard", "shard": index, "attempt": attempt, "attempts": common.job_attempts},
    )
    webhook.send(common.webhook_url, body, secret=common.webhook_secret)
