"""Which vector space the children embed in, and which space places are brought into."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from botocore.exceptions import BotoCoreError, ClientError

from witple_batch import run_state
from witple_batch.errors import ConfigError
from witple_batch.logs import event
from witple_batch.model_files import ModelError
from witple_batch.model_source import ModelSource
from witple_batch.place_text import PLACE_TEXT_VERSION
from witple_batch.vector_space import SPACE_KEY, VectorSpace

log = logging.getLogger(__name__)


def children_space(source: ModelSource | None, client: Any) -> VectorSpace | None:
    """The space the children will embed in: their model (the coordinator shares the image's
    MODEL_DIR, or MODEL_URI) and this code's place text version. None, with a warning, when the
    model cannot be read: the sync then follows the space the last run applied."""
    if source is None:
        return None
    try:
        model = source.onnx_sha256(client)
    except (ModelError, ConfigError, OSError, ClientError, BotoCoreError) as exc:
        event(log, "children's model unknown: the sync follows the last applied space", logging.WARNING, error=str(exc))
        return None
    return VectorSpace(model, PLACE_TEXT_VERSION)


def target_space(conn: psycopg.Connection, read: VectorSpace | None) -> VectorSpace | None:
    """The space to bring places into: the one read off the children's model, so a new export's
    first sync already re-embeds; else the last applied one (vector_space); None before any.
    Not the one read when the last run planned for it applied another (the coordinator and the
    shards read different models or run different code): its children would find every place
    named already in their space while the applied space's places never came over."""
    stored = conn.execute("SELECT content_model, place_text_version FROM vector_space").fetchone()
    applied_space = None if stored is None else VectorSpace(stored[0], stored[1])
    if read is None:
        return applied_space
    last = run_state.last_applied_plan(conn, SPACE_KEY)
    if last is not None:
        planned, applied = VectorSpace.from_record(last[0]), VectorSpace.from_record(last[1])
        if planned == read and applied is not None and applied != read:
            event(
                log,
                "the last run planned for this space applied another: the coordinator and the shards read different"
                " models (MODEL_DIR, MODEL_URI) or run different code; the sync follows the applied space",
                logging.WARNING,
                planned=read.record(),
                applied=applied.record(),
            )
            return applied_space
    return read
