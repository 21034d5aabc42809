"""CATALOGUE_VECTOR_COLUMN: our content vectors written into a vector column of the main server's catalogue.

Opt-in, off by default. The main server's recommender compares a user's behavior_vector (ours,
all-MiniLM-L6-v2) with `place_recommendations.vector`, which its own script fills with
all-MiniLM-L12-v2: a cosine between two models. With CATALOGUE_VECTOR_COLUMN naming that
column, every catalogue row whose place holds a content vector of the applied space (vector_space)
gets that vector there, with the space's mean direction projected out (migration 015): the main
server's uncentred cosine then compares like with like, and ranks as if both sides were centred,
without a change on its side. The direction is set once per space, by the first pass that finds
all but 1% of the catalogue table's places stored in it; until then nothing is written (the
column keeps what it held), and from then every row is written again.

Only that column of the catalogue is written, a chunk of CHUNK places per short transaction,
each under the connection's lock_timeout: readers are never blocked (row locks do not block a
SELECT), and a writer of the main server waits at most one chunk. What each row was last
written from is recorded in place_vectors (published_model, published_text_sha256,
published_direction_version), so a pass writes only places whose content vector changed since,
reading place_vectors once in key order (each chunk goes on from the last key written). A pass
stops, leaving the rest for the next, when a row stays locked past lock_timeout or a reduce is
applying; the coordinator's sync step and every sync run's reduce run a pass (`publish`), so a
kill between two chunks loses nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg
from psycopg import errors, sql

from witple_batch.errors import ConfigError
from witple_batch.logs import event
from witple_batch.schema import REDUCE_LOCK
from witple_batch.settings import env_str

log = logging.getLogger(__name__)

CHUNK = 1_000  # places per transaction: row locks held for tens of milliseconds
DIRECTION_MISSING = 0.01  # the share of catalogued places a space's direction may be set without
_NAME = re.compile(r"^([a-z_][a-z0-9_]{0,62})\.([a-z_][a-z0-9_]{0,62})$")
_KEYS = ("place_id", "table_name")  # how a catalogue row names its place (witple_batch.catalogue)


@dataclass(frozen=True)
class CatalogueColumn:
    table: str
    column: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CatalogueColumn | None:
        """CATALOGUE_VECTOR_COLUMN as `table.column` (lower-case identifiers), or None when unset or `none`."""
        raw = env_str("CATALOGUE_VECTOR_COLUMN", env=env)
        if not raw or raw == "none":
            return None
        match = _NAME.match(raw)
        if match is None:
            raise ConfigError(
                f"CATALOGUE_VECTOR_COLUMN must be table.column, e.g. place_recommendations.vector; got {raw!r}"
            )
        return cls(match.group(1), match.group(2))

    def __str__(self) -> str:
        return f"{self.table}.{self.column}"

    def check(self, conn: psycopg.Connection) -> None:
        """The column is a 384-dimensional pgvector column of a table naming its places; else a ConfigError."""
        columns = dict(
            conn.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
                " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
                (self.table,),
            ).fetchall()
        )
        if not columns:
            raise ConfigError(f"CATALOGUE_VECTOR_COLUMN: no table {self.table}")
        if columns.get(self.column) not in ("vector(384)", "vector"):
            found = columns.get(self.column, "no such column")
            raise ConfigError(f"CATALOGUE_VECTOR_COLUMN: {self} must be vector(384), found {found}")
        if missing := [key for key in _KEYS if key not in columns]:
            raise ConfigError(f"CATALOGUE_VECTOR_COLUMN: {self.table} has no {', '.join(missing)} to name its places")


@dataclass
class Published:
    written: int = 0  # catalogue rows written
    places: int = 0  # places whose content vector the rows now hold
    complete: bool = True  # False: the pass stopped early; the next one goes on


# the applied space's mean catalogue content direction, set once the catalogue is in that space (not from the
# few places one hourly run, or one bounded sync run, embedded first): at least all but DIRECTION_MISSING of
# the target table's places stored in the space, counted against the table itself, and two, since one place
# alone has nothing left once its direction is taken out
_DIRECTION_SQL = """
UPDATE vector_space s SET content_direction = d.direction, content_direction_version = s.content_direction_version + 1
FROM (
    SELECT l2_normalize(avg(p.content_vector)) AS direction, count(*) AS inside
    FROM place_vectors p JOIN vector_space v
      ON (p.content_model, p.place_text_version) = (v.content_model, v.place_text_version)
    WHERE p.catalogue_sha256 IS NOT NULL AND p.content_vector IS NOT NULL
) d, (
    SELECT count(*) AS places FROM (SELECT DISTINCT table_name::text, place_id::text FROM {table}) k
) c
WHERE s.content_direction IS NULL AND d.inside >= 2 AND d.inside >= c.places * (1 - %(missing)s)
"""

_CHUNK_SQL = """
WITH chunk AS (
    SELECT p.place_category, p.place_id, p.content_model, p.content_text_sha256, s.content_direction_version,
           witple_without_direction(p.content_vector, s.content_direction) AS published
    FROM place_vectors p JOIN vector_space s
      ON p.content_model = s.content_model AND p.place_text_version = s.place_text_version
    WHERE p.catalogue_sha256 IS NOT NULL AND p.content_vector IS NOT NULL AND s.content_direction IS NOT NULL
      AND (p.published_model, p.published_text_sha256, p.published_direction_version)
          IS DISTINCT FROM (p.content_model, p.content_text_sha256, s.content_direction_version)
      AND (%(after_category)s::text IS NULL OR (p.place_category, p.place_id) > (%(after_category)s, %(after_id)s))
    ORDER BY p.place_category, p.place_id LIMIT %(chunk)s
), written AS (
    UPDATE {table} c SET {column} = chunk.published FROM chunk
    WHERE c.table_name::text = chunk.place_category AND c.place_id::text = chunk.place_id
    RETURNING 1
), marked AS (
    UPDATE place_vectors p SET published_model = chunk.content_model, published_text_sha256 = chunk.content_text_sha256,
        published_direction_version = chunk.content_direction_version
    FROM chunk WHERE p.place_category = chunk.place_category AND p.place_id = chunk.place_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM written), (SELECT count(*) FROM marked),
       (SELECT ARRAY[place_category, place_id] FROM chunk ORDER BY place_category DESC, place_id DESC LIMIT 1)
"""


def publish(conn: psycopg.Connection, target: CatalogueColumn, chunk: int = CHUNK) -> Published:
    """Write the content vectors of the applied space (vector_space) that `target` does not hold yet,
    without the space's direction, chunk by chunk, on `conn` outside any transaction."""
    table = sql.Identifier(target.table)
    statement = sql.SQL(_CHUNK_SQL).format(table=table, column=sql.Identifier(target.column))
    direction = sql.SQL(_DIRECTION_SQL).format(table=table)
    done = Published()
    after: list[str | None] = [None, None]  # the last place written: each chunk reads on from it, by key
    while True:
        try:
            with conn.transaction():
                if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (REDUCE_LOCK,)).fetchone()[0]:  # type: ignore[index]
                    done.complete = False  # a reduce is applying: its places are the next pass's
                    break
                unset = conn.execute("SELECT content_direction IS NULL FROM vector_space").fetchone() == (True,)
                if unset:
                    conn.execute(direction, {"missing": DIRECTION_MISSING})
                keys = {"chunk": chunk, "after_category": after[0], "after_id": after[1]}
                written, places, last = conn.execute(statement, keys).fetchone()  # type: ignore[misc]
        except errors.LockNotAvailable:
            done.complete = False  # a row stayed locked past lock_timeout: the next pass retries it
            break
        done.written += written
        done.places += places
        if places < chunk:
            break
        after = last
    event(
        log,
        "catalogue column written",
        column=str(target),
        rows=done.written,
        places=done.places,
        complete=done.complete,
    )
    return done
