"""Where a place's name, overview, region, city and category come from: the main server's catalogue.

CATALOGUE_SOURCE says where to look:

    auto (default)   the main server's `place_recommendations` table, when DATABASE_URL reaches it
    table:<name>     a table with the same columns
    query:<sql>      a query returning them
    s3://bucket/key  a JSON Lines or CSV export (gzip found by magic bytes) with them
    none             no catalogue: every place gets its fallback text

Columns: place_id, table_name (= the actions' place_category), name, overview, region, city,
category. A shard asks for its own places only: in chunks with one join each from a database,
or by streaming an export and keeping the rows it needs, so memory follows the shard's places,
not the catalogue. A missing table is one log line and fallback texts, never a failed shard.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql

from witple_batch.errors import ConfigError
from witple_batch.logs import event
from witple_batch.place_text import MAX_TEXT_CHARS, CatalogueEntry
from witple_batch.s3 import parse_s3_uri

log = logging.getLogger(__name__)

DEFAULT_TABLE = "place_recommendations"
FIELDS = ("name", "overview", "region", "city", "category")
LOOKUP_CHUNK = 20_000
Key = tuple[str, str]  # (place_category, place_id)


@dataclass(frozen=True)
class CatalogueSource:
    kind: str  # auto | table | query | s3 | none
    target: str = ""

    @classmethod
    def parse(cls, raw: str) -> CatalogueSource:
        value = raw.strip()
        if value in ("auto", "none"):
            return cls(value)
        for kind in ("table", "query"):
            if value.startswith(f"{kind}:") and value[len(kind) + 1 :].strip():
                return cls(kind, value[len(kind) + 1 :].strip())
        if value.startswith("s3://"):
            parse_s3_uri(value)
            return cls("s3", value)
        raise ConfigError("CATALOGUE_SOURCE must be auto, none, table:<name>, query:<sql> or s3://bucket/key")

    def relation(self) -> sql.Composable:
        if self.kind == "query":
            # the operator's own query, as a subquery: no trailing ';', and '%' is not a placeholder
            query = self.target.rstrip().rstrip(";").replace("%", "%%")
            return sql.SQL("({})").format(sql.SQL(query))  # type: ignore[arg-type]
        name = self.target if self.kind == "table" else DEFAULT_TABLE
        return sql.Identifier(*name.split(".", 1))


def _entry(row: dict[str, Any] | tuple[Any, ...]) -> CatalogueEntry:
    values = row if isinstance(row, tuple) else tuple(row.get(field) for field in FIELDS)
    return CatalogueEntry(*(None if v is None or v == "" else str(v) for v in values))


def from_database(conn: psycopg.Connection, source: CatalogueSource, keys: list[Key]) -> dict[Key, CatalogueEntry]:
    # one row per place even when the catalogue repeats one (the same row whoever asks);
    # overviews cut to what place_text keeps
    lookup = sql.SQL(
        "SELECT DISTINCT ON (k.n) k.n - 1, c.name, left(c.overview::text, %(cap)s), c.region, c.city, c.category"
        " FROM unnest(%(categories)s::text[], %(ids)s::text[]) WITH ORDINALITY AS k(table_name, place_id, n)"
        " JOIN {} c ON c.table_name::text = k.table_name AND c.place_id::text = k.place_id"
        " ORDER BY k.n, c.name, c.overview, c.region, c.city, c.category"
    ).format(source.relation())
    found: dict[Key, CatalogueEntry] = {}
    for start in range(0, len(keys), LOOKUP_CHUNK):
        chunk = keys[start : start + LOOKUP_CHUNK]
        params = {"categories": [c for c, _ in chunk], "ids": [p for _, p in chunk], "cap": MAX_TEXT_CHARS}
        rows = conn.execute(lookup, params).fetchall()
        for row in rows:
            found[chunk[row[0]]] = _entry(tuple(row[1:]))
    return found


def _export_rows(body: Any) -> Iterator[dict[str, Any]]:
    """Rows of a JSON Lines or CSV export, streamed (gzip by its magic bytes)."""
    head = body.read(2)
    raw: Any = io.BufferedReader(_Prefixed(head, body))  # type: ignore[arg-type]
    if head == b"\x1f\x8b":
        raw = gzip.GzipFile(fileobj=raw)
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
    first = text.readline()
    lines = itertools.chain([first], text)  # streamed: never the whole export at once
    if first.lstrip().startswith("{"):
        for line in lines:
            if line.strip():
                yield orjson.loads(line)
        return
    yield from csv.DictReader(lines)


class _Prefixed(io.RawIOBase):
    """The bytes already read to sniff the format, then the rest of the stream."""

    def __init__(self, head: bytes, body: Any) -> None:
        self._head = head
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def from_export(client: Any, source: CatalogueSource, keys: list[Key]) -> dict[Key, CatalogueEntry]:
    bucket, key = parse_s3_uri(source.target)
    wanted = set(keys)
    found: dict[Key, CatalogueEntry] = {}
    for row in _export_rows(client.get_object(Bucket=bucket, Key=key)["Body"]):
        place = (str(row.get("table_name", "")), str(row.get("place_id", "")))
        if place in wanted:
            found[place] = _entry(row)
    return found


def lookup(
    source: CatalogueSource, keys: list[Key], *, conn: psycopg.Connection | None, client: Any
) -> dict[Key, CatalogueEntry]:
    """The catalogue entries of these places (those it knows); never fails the shard over a missing table."""
    if source.kind == "none" or not keys:
        return {}
    if source.kind == "s3":
        return from_export(client, source, keys)
    if conn is None:  # auto without a database (table: and query: need one, checked at start)
        return {}
    try:
        with conn.transaction():
            return from_database(conn, source, keys)
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
        if source.kind != "auto":  # a named catalogue that is not there is a mistake, not a fallback
            raise ConfigError(f"CATALOGUE_SOURCE {source.kind}:{source.target} cannot be read: {exc}") from None
        event(log, "no catalogue to read; places get their fallback text", logging.WARNING, error=str(exc).strip())
        return {}
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigError(
            f"the shard's database role may not read the catalogue ({exc}); grant it SELECT (deploy/sql/roles.sql)"
        ) from None


# The places of a catalogue in the database whose stored content vector is missing, of another
# space, or made from other catalogue fields than the row's today: one statement, read by the
# database, so an unchanged catalogue costs one scan. A place the catalogue repeats counts by the
# same row from_database chooses, or it would be embedded again on every run.
_UNSYNCED = """
SELECT c.table_name, c.place_id FROM (
    SELECT DISTINCT ON (c.table_name::text, c.place_id::text) c.table_name::text AS table_name,
           c.place_id::text AS place_id,
           witple_catalogue_sha256(c.name::text, c.overview::text, c.region::text, c.city::text, c.category::text)
             AS sha
    FROM {} c
    ORDER BY c.table_name::text, c.place_id::text, c.name, c.overview, c.region, c.city, c.category
) c
LEFT JOIN place_vectors p ON p.place_category = c.table_name AND p.place_id = c.place_id
WHERE {}
ORDER BY c.table_name, c.place_id
LIMIT %(limit)s
"""
_UNSYNCED_EXPORT = """
SELECT k.table_name, k.place_id
FROM unnest(%(categories)s::text[], %(ids)s::text[], %(shas)s::bytea[]) AS k(table_name, place_id, sha)
LEFT JOIN place_vectors p ON p.place_category = k.table_name AND p.place_id = k.place_id
WHERE {}
"""
_STALE = """(p.place_id IS NULL OR p.content_vector IS NULL OR p.content_model IS DISTINCT FROM %(model)s
    OR p.place_text_version IS DISTINCT FROM %(text_version)s OR p.catalogue_sha256 IS DISTINCT FROM {}.sha)"""
# The stored places whose catalogue row is gone (their text is the fallback now, and they are no
# longer new places to recommend), how many there are, and how many places are catalogued.
_REMOVED = """
WITH removed AS MATERIALIZED (
    SELECT p.place_category, p.place_id FROM place_vectors p
    WHERE p.catalogue_sha256 IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM {} c WHERE c.table_name::text = p.place_category AND c.place_id::text = p.place_id)
)
SELECT (SELECT count(*) FROM removed), (SELECT count(*) FROM place_vectors WHERE catalogue_sha256 IS NOT NULL),
       ARRAY(SELECT ARRAY[place_category, place_id] FROM removed ORDER BY place_category, place_id LIMIT %(limit)s)
"""
_EXPORT_KEYS = "catalogue_export_keys"  # a temporary table: the export's keys, to find the removed places
REMOVED_MOST = 0.1  # the share of catalogued places a sync takes as removed at once; more looks like an accident


def unsynced(
    conn: psycopg.Connection,
    source: CatalogueSource,
    client: Any,
    model: str,
    text_version: str,
    limit: int,
    removed_most: float = REMOVED_MOST,
) -> list[Key]:
    """Up to `limit` places whose content vector must be (re-)made in this space, in key order: the
    catalogue rows stale in this space first, then the stored places the catalogue no longer has
    (unless more than `removed_most` of the catalogued places look removed: an empty or half-loaded
    catalogue is logged, not acted on). The database compares a catalogue of its own; an export is
    streamed and compared a chunk of LOOKUP_CHUNK rows at a time, its keys copied to a temporary
    table. Memory follows `limit` and a chunk, never the catalogue."""
    if source.kind == "none" or limit <= 0:
        return []
    space = {"model": model, "text_version": text_version, "limit": limit}
    if source.kind == "s3":
        with conn.transaction():  # the temporary table of the export's keys lives as long as this transaction
            keys, found = _unsynced_in_export(conn, source, client, space)
            return found + _removed(conn, keys, limit - len(found), removed_most)
    relation = source.relation()
    statement = sql.SQL(_UNSYNCED).format(relation, sql.SQL(_STALE.format("c")))
    try:
        with conn.transaction():
            found = [(c, p) for c, p in conn.execute(statement, space).fetchall()]
            return found + _removed(conn, relation, limit - len(found), removed_most)
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
        if source.kind != "auto":
            raise ConfigError(f"CATALOGUE_SOURCE {source.kind}:{source.target} cannot be read: {exc}") from None
        event(log, "no catalogue to sync", logging.WARNING, error=str(exc).strip())
        return []


def _unsynced_in_export(
    conn: psycopg.Connection, source: CatalogueSource, client: Any, space: dict[str, Any]
) -> tuple[sql.Composable, list[Key]]:
    """The export's stale rows, up to the limit, and the temporary table its keys were copied to
    (all of them only when the limit was not reached)."""
    conn.execute(f"DROP TABLE IF EXISTS pg_temp.{_EXPORT_KEYS}")
    conn.execute(f"CREATE TEMPORARY TABLE {_EXPORT_KEYS} (table_name text, place_id text) ON COMMIT DROP")
    bucket, key = parse_s3_uri(source.target)
    rows = _export_rows(client.get_object(Bucket=bucket, Key=key)["Body"])
    found: list[Key] = []
    statement = sql.SQL(_UNSYNCED_EXPORT.format(_STALE.format("k")))
    while len(found) < space["limit"] and (chunk := list(itertools.islice(rows, LOOKUP_CHUNK))):
        entries = {(str(r.get("table_name", "")), str(r.get("place_id", ""))): _entry(r).sha256() for r in chunk}
        params = {
            **space,
            "categories": [c for c, _ in entries],
            "ids": [p for _, p in entries],
            "shas": list(entries.values()),
        }
        found += [(c, p) for c, p in conn.execute(statement, params).fetchall()][: space["limit"] - len(found)]
        with conn.cursor().copy(f"COPY {_EXPORT_KEYS} FROM STDIN") as copy:
            for place in entries:
                copy.write_row(place)
    return sql.Identifier(_EXPORT_KEYS), found


def _removed(conn: psycopg.Connection, catalogue: sql.Composable, limit: int, most: float) -> list[Key]:
    """Up to `limit` stored places `catalogue` no longer has, in key order; none when more than
    `most` of the catalogued places would be, or when the stale rows took the whole limit (an
    export's key table then holds only the rows read so far)."""
    if limit <= 0:
        return []
    statement = sql.SQL(_REMOVED).format(catalogue)
    removed, catalogued, keys = conn.execute(statement, {"limit": limit}).fetchone()  # type: ignore[misc]
    if removed > most * catalogued:
        event(
            log,
            "too many catalogued places are missing from the catalogue to take them as removed",
            logging.WARNING,
            missing=removed,
            catalogued=catalogued,
            most=most,
            remedy="check the catalogue; if they were removed, run `coordinator sync --max-removed-share 1`",
        )
        return []
    return [(c, p) for c, p in keys]
