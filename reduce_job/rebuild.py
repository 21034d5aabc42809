"""`python -m reduce_job rebuild-vectors`: every vector recomputed from the tables, in one transaction.

Under the reduce lock, so no run interleaves; the sums go a block of users and a range of places
at a time (vector_sums.py), so the job's memory does not grow with users or pairs. The space is
the one the stored content vectors were made in (vector_space), with today's ACTION_WEIGHTS.
It is the run path with an empty run (the same statements), told to recompute everything; then
the place neighbours are counted from scratch, every list made (reduce_job/neighbours.py).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from reduce_job import neighbours, staging, vectors
from reduce_job.config import action_weights, neighbour_settings
from reduce_job.reduce_lock import take_reduce_lock
from reduce_job.run import apply_staged
from witple_batch.database import connect_for
from witple_batch.errors import ConfigError
from witple_batch.schema import migrate
from witple_batch.settings import common_from_env


def rebuild_vectors() -> dict[str, Any]:
    common = common_from_env()
    weights = action_weights()
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    with connect_for(common, "reduce_job.rebuild") as conn:
        migrate(conn)
        staging.create(conn)  # empty: a rebuild is a run of nothing with every vector recomputed
        with conn.transaction():
            take_reduce_lock(conn, common)
            stored = vectors.stored_space(conn)
            if stored is None:
                raise ConfigError("no vectors to rebuild yet: no run has been applied")
            space = replace(stored, weights=weights)
            result = apply_staged(conn, space, seconds, everything=True)
        every_list = replace(neighbour_settings(), places_per_run=None)  # none left waiting
        lists = neighbours.maintain(conn, every_list, from_scratch=True, wait=True)
    return {
        "vectors": result["vectors"],
        "written": result["written"],
        "neighbours": lists,
        "seconds": round(time.perf_counter() - started, 3),
        "space": {**space.record(), "weights": weights.as_dict()},
    }
