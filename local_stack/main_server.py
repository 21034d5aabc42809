"""The main server's database as its SQLAlchemy models create it (MAIN_SERVER.md): for adoption tests and benchmarks."""

from __future__ import annotations

from typing import Any

import psycopg

from witple_batch.run_state import Notice

DDL = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE users (
    user_id varchar PRIMARY KEY, email varchar NOT NULL UNIQUE, name varchar, created_at timestamptz DEFAULT now()
);
CREATE TABLE user_behavior_vectors (
    user_id varchar PRIMARY KEY REFERENCES users (user_id),
    behavior_vector double precision[],
    like_score double precision DEFAULT 0, bookmark_score double precision DEFAULT 0,
    click_score double precision DEFAULT 0, dwell_time_score double precision DEFAULT 0,
    total_actions integer DEFAULT 0, total_likes integer DEFAULT 0, total_bookmarks integer DEFAULT 0,
    total_clicks integer DEFAULT 0,
    last_action_date timestamptz, vector_updated_at timestamptz DEFAULT now(), created_at timestamptz DEFAULT now()
);
CREATE TABLE place_vectors (
    id serial PRIMARY KEY, place_id varchar NOT NULL, place_category varchar NOT NULL,
    content_vector double precision[], behavior_vector double precision[], combined_vector double precision[],
    total_likes integer DEFAULT 0, total_bookmarks integer DEFAULT 0, total_clicks integer DEFAULT 0,
    unique_users integer DEFAULT 0,
    avg_dwell_time double precision DEFAULT 0, popularity_score double precision DEFAULT 0,
    engagement_score double precision DEFAULT 0,
    vector_updated_at timestamptz DEFAULT now(), stats_updated_at timestamptz DEFAULT now(),
    created_at timestamptz DEFAULT now()
);
CREATE INDEX ix_place_vectors_place_id ON place_vectors (place_id);
CREATE INDEX ix_place_vectors_place_category ON place_vectors (place_category);
CREATE TABLE user_actions (
    id serial PRIMARY KEY, user_id varchar REFERENCES users (user_id), place_category varchar, place_id varchar,
    action_type varchar, batch_processed boolean DEFAULT false, batch_processed_at timestamptz, batch_id varchar,
    created_at timestamptz DEFAULT now()
);
"""


def create(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(DDL)


def column_types(url: str) -> dict[tuple[str, str], str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, udt_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name IN ('user_behavior_vectors', 'place_vectors')"
        ).fetchall()
    return {(t, c): u for t, c, u in rows}


def validate_notice(body: dict[str, Any]) -> None:
    """The main server's pydantic model of the completion webhook, as plain type checks."""
    required = {
        "job_id": str,
        "job_name": str,
        "job_status": str,
        "batch_id": str,
        "processed_records": int,
        "processing_time_seconds": float,
        "s3_input_path": str,
    }
    for name, kind in required.items():
        assert type(body[name]) is kind, f"{name} is {type(body[name]).__name__}, not {kind.__name__}"
    assert body["job_status"] in {notice.value for notice in Notice}
    assert body["error_message"] is None or isinstance(body["error_message"], str)
    assert body["metadata"] is None or isinstance(body["metadata"], dict)
    assert set(body) == {*required, "error_message", "metadata"}
