"""The catalogue sync: every catalogue place gets its content vector before anyone acts on it.

A sync is a run of its own, planned by the coordinator before each hourly run (and on demand,
`python -m coordinator sync`): its children have no files, only places to embed, and its reduce
writes each place's content vector, with zero statistics for a place no one has acted on yet.
So the hourly runs find every catalogue place stored and embed only what the catalogue does not
know. The places to embed are, in this order and at most `per_child` x `max_children` per run:

* places stored in another vector space than the children's (a new export or place text
  version), most recently active first;
* catalogue places with no content vector in the space, or whose catalogue fields changed since
  it was made (witple_batch.catalogue.unsynced: one statement over the catalogue);
* stored places whose catalogue row was removed: they get their fallback text and stop being new
  places to recommend (unless more than --max-removed-share of them look removed at once, as an
  empty or half-loaded catalogue would: that is logged and left alone).

With CATALOGUE_VECTOR_COLUMN set, the sync also keeps that column of the catalogue holding our
content vectors (witple_batch.catalogue_column): before planning, and in each sync run's reduce.

Bounded per run, so an hourly run never waits on a whole catalogue: a first load or a new model
takes several runs (or one `coordinator sync` with larger bounds). Restartable and exactly once
like any run: it is claimed and planned under the planner lock, and no sync is planned while a
live run was handed places to embed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from coordinator.plan import PlannedRun, write_plan
from coordinator.sizing import MAX_ARRAY_SIZE
from coordinator.space import children_space, target_space
from witple_batch import catalogue, catalogue_column, run_state
from witple_batch.catalogue import CatalogueSource, Key
from witple_batch.catalogue_column import CatalogueColumn
from witple_batch.errors import ConfigError
from witple_batch.logs import event
from witple_batch.model_source import ModelSource
from witple_batch.settings import CommonConfig
from witple_batch.vector_space import VectorSpace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncOptions:
    run_id: str
    catalogue: CatalogueSource
    model: ModelSource | None  # the children's model; None: the space the last run applied
    per_child: int = 2_000  # places one child embeds (about 30 s of catalogue texts)
    max_children: int = 8
    lease_hours: float = 8.0
    dry_run: bool = False
    column: CatalogueColumn | None = None  # CATALOGUE_VECTOR_COLUMN: written before planning
    max_removed_share: float = catalogue.REMOVED_MOST  # more catalogued places missing: not taken as removed

    @property
    def most(self) -> int:
        return self.per_child * self.max_children


def stale_places(conn: psycopg.Connection, space: VectorSpace, limit: int) -> list[tuple[str, str]]:
    """Places whose stored content was made in another space, most recently active first."""
    rows = conn.execute(
        "SELECT place_category, place_id FROM place_vectors"
        " WHERE content_model IS DISTINCT FROM %(model)s OR place_text_version IS DISTINCT FROM %(text_version)s"
        " ORDER BY last_action_date DESC NULLS LAST, place_category, place_id LIMIT %(limit)s",
        {"model": space.model, "text_version": space.text_version, "limit": limit},
    ).fetchall()
    return [(category, place_id) for category, place_id in rows]


def places_to_embed(conn: psycopg.Connection, client: Any, options: SyncOptions, space: VectorSpace) -> list[Key]:
    """At most `options.most` places, each once: another space's first, then the catalogue's."""
    limit = options.most
    places = dict.fromkeys(stale_places(conn, space, limit))
    if len(places) < limit:
        found = catalogue.unsynced(
            conn, options.catalogue, client, space.model, space.text_version, limit, options.max_removed_share
        )
        places |= dict.fromkeys(found)
    return list(places)[:limit]


def plan_sync(conn: psycopg.Connection, client: Any, config: CommonConfig, options: SyncOptions) -> PlannedRun:
    """Plan one sync run (the caller migrated and settled past runs); a dry run writes nothing.
    With CATALOGUE_VECTOR_COLUMN, the catalogue's column first gets what the past runs stored."""
    if options.column is not None:
        options.column.check(conn)
        if not options.dry_run:
            catalogue_column.publish(conn, options.column)
    read = children_space(options.model, client)
    with conn.transaction():
        run_state.lock_planners(conn)
        if (existing := run_state.get(conn, options.run_id)) is not None:
            raise ConfigError(f"BATCH_ID {options.run_id} is already {existing.status}; choose a new one")
        space = target_space(conn, read)
        if space is None or run_state.a_sync_is_live(conn):
            reason = "no space to embed in yet" if space is None else "another live run is embedding places"
            event(log, "nothing to sync", reason=reason)
            return PlannedRun(options.run_id)
        places = places_to_embed(conn, client, options, space)
        children = min(math.ceil(len(places) / options.per_child), MAX_ARRAY_SIZE) if options.per_child else 0
        planned = PlannedRun(
            options.run_id,
            shards=children,
            places=len(places),
            more=len(places) >= options.most,
            space=space.record(),
        )
        event(log, "sync planned", places=len(places), children=children, space=space.record())
        if children and not options.dry_run:
            shards: list[list[Any]] = [[] for _ in range(children)]
            planned = replace(planned, manifest_uri=write_plan(client, config, options.run_id, shards, places, None))
            run_state.record_planned(conn, options.run_id, options.lease_hours * 3600, planned.record(read))
    return planned
