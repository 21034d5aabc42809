"""The reduce job's settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reduce_job.consolidate import ConsolidationSettings
from reduce_job.neighbours import NeighbourSettings
from witple_batch.catalogue_column import CatalogueColumn
from witple_batch.errors import ConfigError
from witple_batch.settings import CommonConfig, common_from_env, env_choice, env_int, env_str, required_run_id
from witple_batch.vector_space import DEFAULT_WEIGHTS, ActionWeights


@dataclass(frozen=True)
class ReduceConfig:
    common: CommonConfig
    run_id: str
    weights: ActionWeights  # what each action type weighs in vectors
    user_vector_index: bool  # USER_VECTOR_INDEX=hnsw keeps an HNSW index on user vectors
    partials_ahead: int  # shards fetched ahead of the one being staged
    neighbours: NeighbourSettings  # the place neighbours recommend_places looks up
    consolidation: ConsolidationSettings  # when and in what chunks the places catch up with their users
    catalogue_column: CatalogueColumn | None = None  # CATALOGUE_VECTOR_COLUMN: written after the commit


def action_weights(env: Mapping[str, str] | None = None) -> ActionWeights:
    return ActionWeights.parse(env_str("ACTION_WEIGHTS", DEFAULT_WEIGHTS, env) or DEFAULT_WEIGHTS)


def neighbour_settings(env: Mapping[str, str] | None = None) -> NeighbourSettings:
    per_run = env_int("NEIGHBOUR_PLACES_PER_RUN", 5_000, env, minimum=0)
    return NeighbourSettings(
        neighbours=env_int("PLACE_NEIGHBOURS", 100, env, minimum=1, maximum=1_000),
        places_per_run=per_run or None,  # 0: every due list, however many
        window=env_int("NEIGHBOUR_WINDOW", 20, env, minimum=1, maximum=1_000),
    )


def consolidation_settings(env: Mapping[str, str] | None = None) -> ConsolidationSettings:
    return ConsolidationSettings(
        # at most daily, at least weekly: a place lags its users' newest vectors at most this long, plus a pass
        every_hours=env_int("CONSOLIDATE_EVERY_HOURS", 24, env, minimum=24, maximum=168),
        pairs_per_chunk=env_int("CONSOLIDATE_PAIRS_PER_CHUNK", 200_000, env, minimum=1),
        # a run's pass, after its notice, well inside JOB_TIMEOUT_SECONDS; the next run goes on
        seconds_per_run=env_int("CONSOLIDATE_SECONDS_PER_RUN", 600, env, minimum=1),
    )


def reduce_config_from_env(env: Mapping[str, str] | None = None) -> ReduceConfig:
    common = common_from_env(env)
    if common.database_url is None:
        raise ConfigError("DATABASE_URL is required but not set")
    common.partials_key  # noqa: B018 - required: validated here, once, at start
    return ReduceConfig(
        common=common,
        run_id=required_run_id(env),
        weights=action_weights(env),
        user_vector_index=env_choice("USER_VECTOR_INDEX", "none", ("hnsw", "none"), env) == "hnsw",
        partials_ahead=env_int("PARTIALS_AHEAD", 4, env, minimum=1, maximum=32),
        neighbours=neighbour_settings(env),
        consolidation=consolidation_settings(env),
        catalogue_column=CatalogueColumn.from_env(env),
    )
