"""Key figures for CloudWatch as Embedded Metric Format: one JSON log line per job, no new
dependency and no API call. CloudWatch Logs turns the line into metrics in NAMESPACE, dimension
Job (shard, reduce, coordinator, notice), which deploy/cloudwatch/alarms.json alarms on."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

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
