"""The reduce job's settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from witple_batch.config import DEFAULT_WEIGHTS, CommonConfig, common_from_env, parse_weights, required_batch_id
from witple_batch.settings import ConfigError, env_choice, env_int, env_str


@dataclass(frozen=True)
class ReduceConfig:
    common: CommonConfig
    database_url: str
    batch_id: str
    action_weights: dict[str, float]  # click, like, bookmark: the weight of each in vectors
    user_vector_index: bool  # USER_VECTOR_INDEX=hnsw keeps an HNSW index on user vectors
    partials_ahead: int  # shards fetched ahead of the one being staged


def reduce_config_from_env(env: Mapping[str, str] | None = None) -> ReduceConfig:
    common = common_from_env(env)
    if common.database_url is None:
        raise ConfigError("DATABASE_URL is required but not set")
    common.partials_key  # noqa: B018 - required: validated here, once, at start
    return ReduceConfig(
        common=common,
        database_url=common.database_url,
        batch_id=required_batch_id(env),
        action_weights=parse_weights(env_str("ACTION_WEIGHTS", DEFAULT_WEIGHTS, env) or DEFAULT_WEIGHTS),
        user_vector_index=env_choice("USER_VECTOR_INDEX", "none", ("hnsw", "none"), env) == "hnsw",
        partials_ahead=env_int("PARTIALS_AHEAD", 4, env, minimum=1, maximum=32),
    )
