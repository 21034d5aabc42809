"""Adopt the main server's own user_behavior_vectors and place_vectors, in place.

The main server creates both tables with its SQLAlchemy models before our first run:
`double precision[]` vectors, integer totals, nullable counts, no unique key on (place_id,
place_category), and user_id a foreign key to users. 001 only creates what does not exist, so
this migration looks at the tables as they are and brings them to our shape:

  * missing columns are added (with our defaults: adopted rows carry weight 0, so their old
    vectors, made by another system, count in no mean and are replaced by ours when we have
    data for them);
  * vector columns become vector(384); a row whose array is empty, has a wrong length, a NULL,
    NaN, infinity or a value float4 cannot hold becomes NULL (counted), the rest convert as
    they are;
  * integer totals become bigint, and NULL totals 0;
  * all of a table's changes are one ALTER TABLE: the table is rewritten once;
  * duplicate (place_id, place_category) rows merge into the oldest (smallest id), with the
    table locked against writes first: per-type totals add up (the original batch inserted a
    row per run, each holding that run's counts), unique_users takes the largest (distinct users
    cannot be added), each vector comes from the most recently updated duplicate that has one,
    scores are recomputed; then the unique key is added;
  * the foreign key to users is kept (actions of unknown users are held back, see the reduce).

The HNSW index on content vectors is not built here, inside the migration's transaction, where
it would block the main server's writes for the whole build: the reduce builds it CONCURRENTLY
after its commit (reduce_job/indexes.py). On a database 001 created, every step is already true
and nothing is returned.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from witple_batch.schema import Step

TOTALS = {
    "user_behavior_vectors": ("total_actions", "total_likes", "total_bookmarks", "total_clicks", "total_other"),
    "place_vectors": ("total_likes", "total_bookmarks", "total_clicks", "total_other", "total_actions"),
}
VECTORS = {
    "user_behavior_vectors": ("behavior_vector",),
    "place_vectors": ("content_vector", "behavior_vector", "combined_vector"),
}
# columns we add where the main server's model has none (their definitions as 001 has them)
ADDED = {
    "user_behavior_vectors": {
        "vector_weight": "double precision NOT NULL DEFAULT 0",
        "total_other": "bigint NOT NULL DEFAULT 0",
        "first_action_date": "timestamptz",
    },
    "place_vectors": {
        "behavior_weight": "double precision NOT NULL DEFAULT 0",
        "place_text_version": "text",
        "total_other": "bigint NOT NULL DEFAULT 0",
        "total_actions": "bigint NOT NULL DEFAULT 0",
        "vector_weight": "double precision NOT NULL DEFAULT 0",
        "first_action_date": "timestamptz",
        "last_action_date": "timestamptz",
    },
}
# NaN and infinity fail `abs(x) <= FLOAT4_MAX` too; coalesce: an empty array gives NULL, not false
CONVERTIBLE = (
    "coalesce(array_ndims({c}) = 1 AND cardinality({c}) = 384"
    " AND NOT EXISTS (SELECT 1 FROM unnest({c}) x WHERE x IS NULL OR NOT abs(x) <= 3.4e38), false)"
)
# ALTER ... USING allows no subquery, so the conversion is a function of this session only
VECTOR_OR_NULL = Step(
    "a session-only function: an array as vector(384), or NULL when it cannot be one",
    "CREATE OR REPLACE FUNCTION pg_temp.witple_vector_or_null(a double precision[]) RETURNS vector"
    " LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN IF "  # plpgsql: a SQL function casts before its CASE decides
    + CONVERTIBLE.format(c="a")
    + " THEN RETURN a::vector(384); END IF; RETURN NULL; END $$",
)


def _columns(conn: psycopg.Connection, table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT column_name, udt_name FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = %s",
        (table,),
    ).fetchall()
    return dict(rows)


def _count(conn: psycopg.Connection, query: sql.Composable) -> int:
    return int(conn.execute(query).fetchone()[0])  # type: ignore[index]


def _vector_change(conn: psycopg.Connection, table: str, column: str) -> tuple[str, sql.Composable, int]:
    t, c = sql.Identifier(table), sql.Identifier(column)
    valid = sql.SQL(CONVERTIBLE).format(c=c)
    stored = _count(conn, sql.SQL("SELECT count(*) FROM {} WHERE {} IS NOT NULL").format(t, c))
    invalid = _count(conn, sql.SQL("SELECT count(*) FROM {} WHERE {} IS NOT NULL AND NOT {}").format(t, c, valid))
    return (
        f"{column}: double precision[] -> vector(384): {stored - invalid} rows convert, {invalid} become NULL"
        " (empty, wrong length, NULL, NaN, infinite or beyond float4)",
        sql.SQL("ALTER COLUMN {} TYPE vector(384) USING pg_temp.witple_vector_or_null({})").format(c, c),
        stored,
    )


def _table_steps(conn: psycopg.Connection, table: str, columns: dict[str, str]) -> list[Step]:
    """Every change a table needs, as one ALTER TABLE (one rewrite), plus NULL totals of columns
    that are already bigint."""
    t = sql.Identifier(table)
    changes: list[tuple[str, sql.Composable, int]] = [
        (f"add {name} {definition}", sql.SQL(f"ADD COLUMN {name} {definition}"), 0)
        for name, definition in ADDED[table].items()
        if name not in columns
    ]
    changes += [_vector_change(conn, table, c) for c in VECTORS[table] if columns.get(c) == "_float8"]
    fills = []
    for column in TOTALS[table]:
        if column not in columns:
            continue
        c = sql.Identifier(column)
        nulls = _count(conn, sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL").format(t, c))
        if columns[column] == "int4":
            changes.append(
                (
                    f"{column}: integer -> bigint" + (f", {nulls} NULL totals become 0" if nulls else ""),
                    sql.SQL("ALTER COLUMN {} TYPE bigint USING coalesce({}, 0)").format(c, c),
                    nulls,
                )
            )
        elif nulls:
            fills.append(
                Step(
                    f"{table}.{column}: {nulls} NULL totals become 0",
                    sql.SQL("UPDATE {} SET {} = 0 WHERE {} IS NULL").format(t, c, c),
                    nulls,
                )
            )
    if not changes:
        return fills
    rows = _count(conn, sql.SQL("SELECT count(*) FROM {}").format(t))
    altered = Step(
        f"{table}: one ALTER TABLE, one rewrite of {rows} rows:" + "".join(f"\n      {d}" for d, _, _ in changes),
        sql.SQL("ALTER TABLE {} ").format(t) + sql.SQL(", ").join(clause for _, clause, _ in changes),
        rows,
    )
    return [altered, *fills]


MERGE_DUPLICATES = """
WITH groups AS (
    SELECT place_id, place_category, min(id) AS keep,
           sum(coalesce(total_likes, 0)) AS likes, sum(coalesce(total_bookmarks, 0)) AS bookmarks,
           sum(coalesce(total_clicks, 0)) AS clicks, sum(coalesce(total_other, 0)) AS other,
           max(unique_users) AS unique_users, min(created_at) AS created_at,
           max(stats_updated_at) AS stats_updated_at, max(vector_updated_at) AS vector_updated_at,
           (array_agg(content_vector ORDER BY vector_updated_at DESC NULLS LAST, id DESC)
               FILTER (WHERE content_vector IS NOT NULL))[1] AS content,
           (array_agg(behavior_vector ORDER BY vector_updated_at DESC NULLS LAST, id DESC)
               FILTER (WHERE behavior_vector IS NOT NULL))[1] AS behavior,
           (array_agg(combined_vector ORDER BY vector_updated_at DESC NULLS LAST, id DESC)
               FILTER (WHERE combined_vector IS NOT NULL))[1] AS combined
    FROM place_vectors GROUP BY place_id, place_category HAVING count(*) > 1
), merged AS (
    UPDATE place_vectors p SET
        total_likes = g.likes, total_bookmarks = g.bookmarks, total_clicks = g.clicks, total_other = g.other,
        total_actions = g.likes + g.bookmarks + g.clicks + g.other, unique_users = g.unique_users,
        popularity_score = least(2 * (g.likes + g.bookmarks + g.clicks), 100),
        engagement_score = least(5 * (g.likes + g.bookmarks), 100),
        content_vector = g.content, behavior_vector = g.behavior, combined_vector = g.combined,
        created_at = g.created_at, stats_updated_at = g.stats_updated_at, vector_updated_at = g.vector_updated_at
    FROM groups g WHERE p.id = g.keep
)
DELETE FROM place_vectors p USING groups g
WHERE p.place_id IS NOT DISTINCT FROM g.place_id AND p.place_category IS NOT DISTINCT FROM g.place_category
  AND p.id <> g.keep
"""


def _place_key_steps(conn: psycopg.Connection) -> list[Step]:
    keyed = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
        " WHERE c.relname = 'place_vectors' AND c.relnamespace = current_schema()::regnamespace AND i.indisunique"
        " AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a"
        "      WHERE a.attrelid = c.oid AND a.attnum = ANY(i.indkey)) = ARRAY['place_category', 'place_id'])"
    ).fetchone()[0]  # type: ignore[index]
    if keyed:
        return []
    extra = _count(
        conn,
        sql.SQL(
            "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM place_vectors"
            " GROUP BY place_id, place_category HAVING count(*) > 1) d"
        ),
    )
    return [
        Step(  # no row written between the merge and the key (a write would wait for our commit)
            "place_vectors: locked against writes (reads go on) until the migration commits",
            "LOCK TABLE place_vectors IN SHARE ROW EXCLUSIVE MODE",
        ),
        Step(
            f"place_vectors: {extra} duplicate (place_id, place_category) rows merge into the oldest",
            MERGE_DUPLICATES,
            extra,
        ),
        Step(
            "place_vectors: unique key (place_id, place_category)",
            "ALTER TABLE place_vectors ADD CONSTRAINT place_vectors_place_key UNIQUE (place_id, place_category)",
        ),
    ]


def _fill_place_totals(conn: psycopg.Connection, columns: dict[str, str]) -> list[Step]:
    """The main server's places have no total_actions: it is the sum of the per-type totals."""
    if "total_actions" in columns:
        return []
    return [
        Step(
            "place_vectors.total_actions: likes + bookmarks + clicks of adopted rows",
            "UPDATE place_vectors SET total_actions = coalesce(total_likes, 0) + coalesce(total_bookmarks, 0)"
            " + coalesce(total_clicks, 0) + coalesce(total_other, 0)",
            _count(conn, sql.SQL("SELECT count(*) FROM place_vectors")),
        )
    ]


def steps(conn: psycopg.Connection) -> list[Step]:
    users, places = _columns(conn, "user_behavior_vectors"), _columns(conn, "place_vectors")
    converts = any(
        columns.get(c) == "_float8"
        for table, columns in (("user_behavior_vectors", users), ("place_vectors", places))
        for c in VECTORS[table]
    )
    adopted = [VECTOR_OR_NULL] if converts else []
    adopted += _table_steps(conn, "user_behavior_vectors", users) if users else []  # absent: 001 creates it
    if places:
        adopted += _table_steps(conn, "place_vectors", places) + _fill_place_totals(conn, places)
        adopted += _place_key_steps(conn)
    return adopted
