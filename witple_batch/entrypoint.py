"""What every job's main does around its work: logging, exit codes, SIGTERM, the FAILED notice.

Exit 2 for configuration errors and other permanent ones, AWS refusing the job's role included
(Batch's retry strategy exits on it), 1 for everything else. SIGTERM becomes an exception so the
job can still report before it dies.
Batch sends it for a Spot interruption (the attempt is retried) and at the attempt's timeout
(not retried), and only the clock tells them apart: a SIGTERM within the last tenth of
JOB_TIMEOUT_SECONDS is the timeout, and final.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from botocore.exceptions import ClientError

from witple_batch.errors import EXIT_CONFIG, EXIT_RETRY, ConfigError, PermanentError
from witple_batch.logs import LEVELS, configure, event, log_level, mask_secrets
from witple_batch.settings import job_timeout

log = logging.getLogger(__name__)

# AWS refusing this caller or this resource: a policy or a setting to fix, the same on every attempt
AWS_REFUSALS = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "InvalidClientTokenId",
        "NoSuchBucket",
        "PermanentRedirect",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)


def refused_by_aws(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in AWS_REFUSALS


class Terminated(Exception):
    """The process received SIGTERM."""


@dataclass(frozen=True)
class Failure:
    """What a job's on_failure hears."""

    message: str
    seconds: float
    final: bool  # Batch will not run this job again for the same cause
    out_of_time: bool = False  # SIGTERM at the timeout: Batch kills the container about 30 s later


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(f"stopped by signal {signal.Signals(signum).name} (Batch timeout, cancel or Spot interruption)")


def _timeout_seconds() -> float:
    """JOB_TIMEOUT_SECONDS, leniently: a bad value is the job's settings' to report, at start."""
    try:
        return job_timeout()
    except ConfigError:
        return 3600.0


def run_job(
    job: str,
    work: Callable[[], int],
    on_failure: Callable[[Failure], None] | None = None,
    permanent_errors: tuple[type[BaseException], ...] = (),
) -> int:
    """Run `work`; on failure call on_failure(Failure) and map the exit code.

    A failure is final when Batch will not run this job again for the same cause: a PermanentError,
    one of `permanent_errors` or AWS refusing the role (exit 2, which the retry strategy does not
    retry), or SIGTERM at the attempt's timeout. Otherwise the attempt count decides
    (notices.on_job_failure).
    """
    level = log_level()
    configure(job, level or "INFO")
    signal.signal(signal.SIGTERM, _raise_terminated)
    started = time.monotonic()

    def stop(message: str) -> int:
        event(log, message, logging.ERROR)
        if on_failure:
            on_failure(Failure(message, time.monotonic() - started, final=True))
        return EXIT_CONFIG

    try:
        if level is None:
            raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LEVELS)}")
        return work()
    except (PermanentError, *permanent_errors) as exc:
        return stop(f"configuration error: {exc}" if isinstance(exc, ConfigError) else mask_secrets(str(exc)))
    except (Exception, Terminated) as exc:
        if refused_by_aws(exc):
            return stop(mask_secrets(f"refused by AWS (the role's policy or a setting): {exc}"))
        message = mask_secrets(f"{type(exc).__name__}: {exc}")
        log.error(message, exc_info=not isinstance(exc, Terminated))
        elapsed = time.monotonic() - started
        timed_out = isinstance(exc, Terminated) and elapsed >= 0.9 * _timeout_seconds()
        if on_failure:
            on_failure(Failure(message, elapsed, final=timed_out, out_of_time=timed_out))
        return EXIT_RETRY
    finally:
        sys.stdout.flush()
