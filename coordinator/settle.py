"""Runs that ended without their notice get it: the coordinator's first step, once per submission.

A run whose lease ran out before it committed is recorded failed (its files free again); a run
whose job died before sending its notice (killed at its timeout, database away) is owed one.
Each is concluded as any run is (witple_batch/notices.py: report, then notify).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from witple_batch import notices, run_state
from witple_batch.logs import event
from witple_batch.settings import CommonConfig

log = logging.getLogger(__name__)

OWED_NOTICE_QUIET_SECONDS = 600.0  # a job that just ended may still be sending its own notice
OWED_NOTICES_PER_PLAN = 20


def settle_past_runs(conn: psycopg.Connection, client: Any, config: CommonConfig) -> None:
    with conn.transaction():
        run_state.lock_planners(conn)
        abandoned = run_state.expire_abandoned(conn)
    for run_id in abandoned:
        event(log, "abandoned run recorded failed (its lease expired)", batch_id=run_id)
        notices.conclude(conn, client, config, run_id, by="planner", metadata={"stage": "plan"})
    for run_id in run_state.owed_notices(conn, OWED_NOTICE_QUIET_SECONDS, OWED_NOTICES_PER_PLAN):
        event(log, "sending a notice its run still owes", batch_id=run_id)
        notices.conclude(conn, client, config, run_id, by="planner", metadata={"stage": "plan"}, already_committed=True)
