"""Runs that ended without their notice get it: the coordinator's first step, once per submission.

A run whose lease ran out before it committed is recorded failed (its files free again); a run
whose job died before sending its notice (killed at its timeout, database away) is owed one.
Each is concluded as any run is (witple_batch/notices.py: report, then notify).

Sending them has a time budget, so a receiver that is down or hangs cannot hold planning back:
once it is spent, the runs not yet told are left as they are recorded (ended, no notice) and the
next coordinator sends theirs. The overrun is at most one notice's delivery (WEBHOOK_ATTEMPTS
tries of WEBHOOK_TIMEOUT_SECONDS, with their pauses).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg

from witple_batch import notices, run_state
from witple_batch.logs import event
from witple_batch.settings import CommonConfig

log = logging.getLogger(__name__)

OWED_NOTICE_QUIET_SECONDS = 600.0  # a job that just ended may still be sending its own notice
OWED_NOTICES_PER_PLAN = 20
NOTICES_BUDGET_SECONDS = 120.0  # no notice is begun after this long; read at each call


def settle_past_runs(conn: psycopg.Connection, client: Any, config: CommonConfig) -> None:
    with conn.transaction():
        run_state.lock_planners(conn)
        abandoned = run_state.expire_abandoned(conn)
    for run_id in abandoned:
        event(log, "abandoned run recorded failed (its lease expired)", batch_id=run_id)
    deadline = time.monotonic() + NOTICES_BUDGET_SECONDS
    owed = run_state.owed_notices(conn, OWED_NOTICE_QUIET_SECONDS, OWED_NOTICES_PER_PLAN)
    # an abandoned run just failed is within the quiet period: not in `owed`, so none is sent twice
    due = [(run_id, False) for run_id in abandoned] + [(run_id, True) for run_id in owed]
    for index, (run_id, committed) in enumerate(due):
        if time.monotonic() >= deadline:
            left = [run_id for run_id, _ in due[index:]]
            event(
                log,
                "notices left for the next coordinator: the time for sending them is spent",
                logging.WARNING,
                budget_seconds=NOTICES_BUDGET_SECONDS,
                batch_ids=left,
            )
            return
        if committed:
            event(log, "sending a notice its run still owes", batch_id=run_id)
        notices.conclude(
            conn, client, config, run_id, by="planner", metadata={"stage": "plan"}, already_committed=committed
        )
