"""What this container may use and has used: CPUs by its quota, peak memory, its age.

onnxruntime and numpy size their pools from the host's cores; on Fargate the quota is smaller,
and oversubscribed threads thrash. cgroup v2 `cpu.max`, then v1 cfs quota, then affinity.
"""

from __future__ import annotations

import math
import os
import resource
from pathlib import Path

_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
_CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
_STATUS = Path("/proc/self/status")
_STAT = Path("/proc/self/stat")
_UPTIME = Path("/proc/uptime")


def _quota_cpus() -> float | None:
    try:
        quota, period = _CGROUP_V2.read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(_CGROUP_V1_QUOTA.read_text())
        period_us = int(_CGROUP_V1_PERIOD.read_text())
        return quota_us / period_us if quota_us > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _quota_cpus()
    if quota is None:
        return affinity
    return max(1, min(affinity, math.ceil(quota)))


def peak_rss_mb(pid: int | None = None) -> float:
    """This process's (or a child's, by `pid`) peak resident memory in MiB.

    VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork + exec, so a job started by a
    large parent (a local runner, a benchmark holding its data) would report the parent's size.
    """
    try:
        for line in (_STATUS if pid is None else Path(f"/proc/{pid}/status")).read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if pid is None else 0.0  # Linux: KiB


def process_age_seconds() -> float:
    """Seconds since this process started (0.0 where /proc cannot tell).

    Read when a job's work begins, it is the job's start-up: the interpreter, imports and
    settings, which no timer inside the job can see. Resolution is one clock tick (10 ms). A job
    called inside another process (a test, a benchmark) sees that process's age instead.
    """
    try:
        # field 22 (starttime, clock ticks after boot) follows the ")" that ends the command name
        started_ticks = int(_STAT.read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(_UPTIME.read_text().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0
