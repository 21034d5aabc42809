"""The reduce job's settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from witple_batch.config import CommonConfig, common_from_env, required_batch_id
from witple_batch.settings import ConfigError, env_choice, env_float, env_int


@dataclass(frozen=True)
class ReduceConfig:
    common: CommonConfig
    database_url: str
    batch_id: str
    user_vector_index: str  # hnsw | none
    index_rebuild_fraction: float  # rebuild an index when a batch touches more than this share of its rows
    webhook_attempts: int
    webhook_timeout: float
    db_connect_attempts: int


def reduce_config_from_env(env: Mapping[str, str] | None = None) -> ReduceConfig:
    common = common_from_env(env)
    if common.database_url is None:
        raise ConfigError("DATABASE_URL is required but not set")
    return ReduceConfig(
        common=common,
        database_url=common.database_url,
        batch_id=required_batch_id(env),
        user_vector_index=env_choice("USER_VECTOR_INDEX", "none", ("hnsw", "none"), env),
        index_rebuild_fraction=env_float("INDEX_REBUILD_FRACTION", 0.15, env, minimum=0.0),
        webhook_attempts=env_int("WEBHOOK_ATTEMPTS", 5, env, minimum=1, maximum=20),
        webhook_timeout=env_float("WEBHOOK_TIMEOUT_SECONDS", 10.0, env, minimum=0.1),
        db_connect_attempts=env_int("DB_CONNECT_ATTEMPTS", 5, env, minimum=1, maximum=30),
    )
