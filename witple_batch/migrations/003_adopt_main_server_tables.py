"""Adopt the main server's own user_behavior_vectors and place_vectors, in place.

The main server creates both tables with its SQLAlchemy models before our first run:
`double precision[]` vectors, integer totals, nullable counts, no unique key on (place_id,
place_category), and user_id a foreign key to users. 001 only creates what does not exist, so
this migration looks at the tables as they are and brings them to our shape:

  * missing columns are added (with our defaults: adopted rows carry weight 0, so their old
    vectors, made by another system, count in no mean and are replaced by ours when we have
    data for them);
  * vector columns become vector(384); a row whose array has a wrong length or a NaN/infinity
    becomes NULL (counted), the rest convert as they are;
  * integer totals become bigint, and NULL totals 0;
  * duplicate (place_id, place_category) rows merge into the oldest (smallest id): per-type
    totals add up (the original batch inserted a row per run, each holding that run's counts),
    unique_users takes the largest (distinct users cannot be added), vectors come from the most
    recently updated duplicate, scores are recomputed; then the unique key is added;
  * the HNSW index on content vectors is built;
  * the foreign key to users is kept (actions of unknown users are held back, see the reduce).

On a database 001 created, every step is already true and nothing is returned.
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
FINITE_384 = (
    "array_ndims({c}) = 1 AND array_length({c}, 1) = 384"
    " AND NOT ({c} && ARRAY['NaN', 'Infinity', '-Infinity']::float8[]) AND array_position({c}, NULL) IS NULL"
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


def _vector_steps(conn: psycopg.Connection, table: str, column: str) -> list[Step]:
    t, c = sql.Identifier(table), sql.Identifier(column)
    valid = sql.SQL(FINITE_384.format(c="{c}")).format(c=c)
    invalid = _count(conn, sql.SQL("SELECT count(*) FROM {} WHERE {} IS NOT NULL AND NOT ({})").format(t, c, valid))
    return [
        Step(
            f"{table}.{column}: {invalid} rows with a wrong length, NaN or infinity become NULL",
            sql.SQL("UPDATE {} SET {} = NULL WHERE {} IS NOT NULL AND NOT ({})").format(t, c, c, valid),
            invalid,
        ),
        Step(
            f"{table}.{column}: double precision[] -> vector(384)",
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE vector(384) USING {}::vector(384)").format(t, c, c),
            _count(conn, sql.SQL("SELECT count(*) FROM {} WHERE {} IS NOT NULL").format(t, c)) - invalid,
        ),
    ]


def _table_steps(conn: psycopg.Connection, table: str) -> list[Step]:
    columns = _columns(conn, table)
    if not columns:
        return []  # 001 creates it in our shape
    t = sql.Identifier(table)
    steps = [
        Step(f"{table}: add {name} {definition}", sql.SQL(f"ALTER TABLE {{}} ADD COLUMN {name} {definition}").format(t))
        for name, definition in ADDED[table].items()
        if name not in columns
    ]
    for column in VECTORS[table]:
        if columns.get(column) == "_float8":  # SQLAlchemy's ARRAY(Float)
            steps += _vector_steps(conn, table, column)
    for column in TOTALS[table]:
        c = sql.Identifier(column)
        if columns.get(column) == "int4":
            steps.append(
                Step(
                    f"{table}.{column}: integer -> bigint",
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE bigint").format(t, c),
                )
            )
        if column in columns:
            nulls = _count(conn, sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL").format(t, c))
            if nulls:
                steps.append(
                    Step(
                        f"{table}.{column}: {nulls} NULL totals become 0",
                        sql.SQL("UPDATE {} SET {} = 0 WHERE {} IS NULL").format(t, c, c),
                        nulls,
                    )
                )
    return steps


MERGE_DUPLICATES = """
WITH groups AS (
    SELECT place_id, place_category, min(id) AS keep,
           sum(coalesce(total_likes, 0)) AS likes, sum(coalesce(total_bookmarks, 0)) AS bookmarks,
           sum(coalesce(total_clicks, 0)) AS clicks, sum(coalesce(total_other, 0)) AS other,
           max(unique_users) AS unique_users, min(created_at) AS created_at,
           max(stats_updated_at) AS stats_updated_at, max(vector_updated_at) AS vector_updated_at,
           (array_agg(content_vector ORDER BY vector_updated_at DESC NULLS LAST, id DESC))[1] AS content,
           (array_agg(behavior_vector ORDER BY vector_updated_at DESC NULLS LAST, id DESC))[1] AS behavior,
           (array_agg(combined_vector ORDER BY vector_updated_at DESC NULLS LAST, id DESC))[1] AS combined
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
    RETURNING p.id
)
DELETE FROM place_vectors p USING groups g
WHERE p.place_id = g.place_id AND p.place_category = g.place_category AND p.id <> g.keep
"""


def _place_key_steps(conn: psycopg.Connection) -> list[Step]:
    if not _columns(conn, "place_vectors"):
        return []
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


def _fill_place_totals(conn: psycopg.Connection) -> list[Step]:
    """The main server's places have no total_actions: it is the sum of the per-type totals."""
    columns = _columns(conn, "place_vectors")
    if not columns or "total_actions" in columns:
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
    index = conn.execute("SELECT to_regclass('place_vectors_content_hnsw') IS NULL").fetchone()[0]  # type: ignore[index]
    adopted = (
        _table_steps(conn, "user_behavior_vectors")
        + _table_steps(conn, "place_vectors")
        + _fill_place_totals(conn)
        + _place_key_steps(conn)
    )
    if index and _columns(conn, "place_vectors"):
        adopted.append(
            Step(
                "place_vectors: HNSW index on content_vector (cosine)",
                "CREATE INDEX place_vectors_content_hnsw ON place_vectors"
                " USING hnsw (content_vector vector_cosine_ops)",
            )
        )
    return adopted
