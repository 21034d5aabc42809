"""Bringing stored places into the children's vector space: which space, and which places.

A new export (or place text version) moves the space. The planner reads the children's model
off its own MODEL_DIR or MODEL_URI (the image's, which the coordinator shares with the shards)
and deals each run's children the places whose stored content was made in another space, most
recently active first, `refresh_per_shard` each, on up to `max_refresh_shards` children of their
own when the file shards' shares cannot take them all. Until re-embedded, such a place counts in
no vector (reduce_job/vectors.py).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from botocore.exceptions import BotoCoreError, ClientError

from coordinator.config import PlanOptions
from coordinator.sizing import refresh_shard_limit
from witple_batch import run_state
from witple_batch.errors import ConfigError
from witple_batch.logs import event
from witple_batch.model_files import ModelError
from witple_batch.model_source import ModelSource
from witple_batch.place_text import PLACE_TEXT_VERSION
from witple_batch.vector_space import SPACE_KEY, VectorSpace

log = logging.getLogger(__name__)


def children_space(source: ModelSource | None, client: Any) -> VectorSpace | None:
    """The space the children will embed in: their model and this code's place text version.
    None, with a warning, when the model cannot be read: re-embedding then follows the last
    applied space, a run later, which is no reason to stop planning files."""
    if source is None:
        return None
    try:
        model = source.onnx_sha256(client)
    except (ModelError, ConfigError, OSError, ClientError, BotoCoreError) as exc:
        event(
            log,
            "children's model unknown: re-embedding follows the last applied space",
            logging.WARNING,
            error=str(exc),
        )
        return None
    return VectorSpace(model, PLACE_TEXT_VERSION)


def refresh_space(conn: psycopg.Connection, read: VectorSpace | None) -> VectorSpace | None:
    """The space to bring places over to: the one this planner read, so a new export's first run
    already re-embeds. Not when the last committed run planned for that space was applied in
    another (the coordinator and the shards read different models or run different code): the
    children would find every place named already in theirs while the applied space's stale
    places never came over. None then, with a warning: the last applied space, as without a read."""
    if read is None:
        return None
    last = run_state.last_applied_plan(conn, SPACE_KEY)
    if last is not None:
        planned, applied = VectorSpace.from_record(last[0]), VectorSpace.from_record(last[1])
        if planned == read and applied is not None and applied != read:
            event(
                log,
                "the last run planned for this space applied another: the coordinator and the shards read different"
                " models (MODEL_DIR, MODEL_URI) or run different code; re-embedding follows the applied space",
                logging.WARNING,
                planned=read.record(),
                applied=applied.record(),
            )
            return None
    return read


def places(
    conn: psycopg.Connection, file_shards: int, options: PlanOptions, toward: VectorSpace | None
) -> list[tuple[str, str]]:
    """The places this run's children re-embed: none without file shards, and none while another
    live run was handed such places (its children may be re-embedding them)."""
    if not file_shards or not options.refresh_per_shard or run_state.another_run_refreshing(conn):
        return []
    most = (file_shards + refresh_shard_limit(file_shards, options.max_refresh_shards)) * options.refresh_per_shard
    return stale_places(conn, most, toward)


def stale_places(conn: psycopg.Connection, limit: int, space: VectorSpace | None) -> list[tuple[str, str]]:
    """Places whose stored content was not made in `space`, most recently active first; without
    `space`, in the last applied one (vector_space). Nothing before a first batch: an empty or
    adopted table has nothing of ours to bring over."""
    rows = conn.execute(
        "SELECT p.place_category, p.place_id FROM place_vectors p, vector_space s"
        " WHERE p.content_model IS DISTINCT FROM coalesce(%(model)s, s.content_model)"
        " OR p.place_text_version IS DISTINCT FROM coalesce(%(text_version)s, s.place_text_version)"
        " ORDER BY p.last_action_date DESC NULLS LAST, p.place_category, p.place_id LIMIT %(limit)s",
        {"model": space and space.model, "text_version": space and space.text_version, "limit": limit},
    ).fetchall()
    return [(category, place_id) for category, place_id in rows]
