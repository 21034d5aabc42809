"""Key figures for CloudWatch as Embedded Metric Format: one JSON log line per job, no new
dependency and no API call. CloudWatch Logs turns the line into metrics in NAMESPACE, dimension
Job (shard, reduce, coordinator, notice); deploy/stack.yaml alarms on BatchesFailed (notice) and
RejectShare (reduce)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from witple_batch.logs import event

log = logging.getLogger(__name__)

NAMESPACE = "Witple/Batch"
UNITS = {"Seconds": "Seconds", "PeakRssMb": "Megabytes", "RejectShare": "Percent"}  # the rest are counts


def emit(job: str, figures: Mapping[str, float]) -> None:
    """One EMF line: `figures` (name -> value) as metrics of dimension Job=`job`."""
    metrics = [{"Name": name, "Unit": UNITS.get(name, "Count")} for name in figures]
    envelope = {
        "Timestamp": int(time.time() * 1000),
        "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [["Job"]], "Metrics": metrics}],
    }
    event(log, "metrics", _aws=envelope, Job=job, **{name: float(value) for name, value in figures.items()})


def reject_share(accepted: int, rejected: int) -> float:
    """Rejected records as a percentage of all records read (0 when none were read)."""
    total = accepted + rejected
    return 100.0 * rejected / total if total else 0.0


def run_figures(counts: Mapping[str, Any], seconds: float, peak_rss_mb: float) -> dict[str, float]:
    """The figures a shard and the reduce both report, from their counts (same key names in both)."""
    accepted, rejected = int(counts.get("records_accepted", 0)), int(counts.get("records_rejected", 0))
    return {
        "Files": counts.get("files", 0),
        "FilesQuarantined": counts.get("files_quarantined", 0),
        "Actions": accepted,
        "Rejects": rejected,
        "RejectShare": reject_share(accepted, rejected),
        "Seconds": seconds,
        "PeakRssMb": peak_rss_mb,
    }
