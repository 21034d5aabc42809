"""What every job's main does around its work: logging, exit codes, SIGTERM, the FAILED notice.

Exit 2 for configuration errors and other permanent ones (Batch's retry strategy exits on it),
1 for everything else. SIGTERM (Batch's timeout or a cancel) becomes an exception so the
job can still report before it dies.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

from witple_batch.logs import configure, event, mask_secrets
from witple_batch.settings import EXIT_CONFIG, ConfigError, PermanentError

log = logging.getLogger(__name__)


class Terminated(Exception):
    """The process received SIGTERM."""


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(f"stopped by signal {signal.Signals(signum).name} (Batch timeout or cancel)")


def run_job(
    job: str,
    work: Callable[[], int],
    on_failure: Callable[[str, bool, float], None] | None = None,
) -> int:
    """Run `work`; on failure call on_failure(message, final, seconds) and map the exit code.

    `final` is true when Batch will not run this attempt again for the same cause: a permanent
    error (exit 2) or SIGTERM (Batch's timeout or a cancel).
    """
    configure(job)
    signal.signal(signal.SIGTERM, _raise_terminated)
    started = time.monotonic()
    try:
        return work()
    except PermanentError as exc:
        message = f"configuration error: {exc}" if isinstance(exc, ConfigError) else str(exc)
        event(log, message, logging.ERROR)
        if on_failure:
            on_failure(message, True, time.monotonic() - started)
        return EXIT_CONFIG
    except (Exception, Terminated) as exc:
        message = mask_secrets(f"{type(exc).__name__}: {exc}")
        terminated = isinstance(exc, Terminated)
        log.error(message, exc_info=not terminated)
        if on_failure:
            on_failure(message, terminated, time.monotonic() - started)
        return 1
    finally:
        sys.stdout.flush()
