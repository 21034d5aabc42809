"""The two kinds of failure every job tells apart, and the exit codes Batch's retry strategy reads.

A PermanentError cannot be fixed by running the job again (exit 2: the retry strategy stops);
anything else may be transient (exit 1: Batch retries it).
"""

from __future__ import annotations

EXIT_RETRY = 1
EXIT_CONFIG = 2


class PermanentError(Exception):
    """Retrying the job cannot help."""


class ConfigError(PermanentError):
    """A setting is missing or malformed."""
