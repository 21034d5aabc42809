"""The array child's settings, read once from the environment Batch gives it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shard_job.input_files import InputLimits
from witple_batch.catalogue import CatalogueSource
from witple_batch.errors import ConfigError
from witple_batch.model_source import ModelSource
from witple_batch.settings import CommonConfig, common_from_env, env_int, env_str, required_run_id

MIB = 1024 * 1024


@dataclass(frozen=True)
class ShardConfig:
    common: CommonConfig
    run_id: str
    array_index: int
    model: ModelSource
    limits: InputLimits
    download_concurrency: int
    read_ahead_bytes: int
    max_actions: int  # accepted actions a shard holds; the files past it wait for the next plan
    max_places: int  # distinct places a shard holds, likewise
    embed_threads: int | None
    catalogue: CatalogueSource

    @property
    def attempt(self) -> int:
        return self.common.attempt


def input_limits(env: Mapping[str, str] | None = None) -> InputLimits:
    """What one file may cost: the listed size (checked before the GET), inflated bytes, records, record size."""
    return InputLimits(
        max_object_bytes=env_int("MAX_OBJECT_MB", 64, env, minimum=1, maximum=4096) * MIB,
        max_decompressed_bytes=env_int("MAX_DECOMPRESSED_MB", 256, env, minimum=1, maximum=65536) * MIB,
        max_records=env_int("MAX_RECORDS_PER_FILE", 100_000, env, minimum=1, maximum=10_000_000),
        max_record_bytes=env_int("MAX_RECORD_KB", 64, env, minimum=1, maximum=16_384) * 1024,
    )


def shard_config_from_env(env: Mapping[str, str] | None = None) -> ShardConfig:
    common = common_from_env(env)
    common.partials_key  # noqa: B018 - required: validated here, once, at start
    catalogue = CatalogueSource.parse(env_str("CATALOGUE_SOURCE", "auto", env) or "auto")
    if catalogue.kind in ("table", "query") and common.database_url is None:
        raise ConfigError(f"CATALOGUE_SOURCE {catalogue.kind}:... needs DATABASE_URL, which is not set")
    return ShardConfig(
        common=common,
        run_id=required_run_id(env),
        array_index=env_int("AWS_BATCH_JOB_ARRAY_INDEX", 0, env, minimum=0, maximum=9_999),
        model=ModelSource.from_env(env),
        limits=input_limits(env),
        download_concurrency=env_int("DOWNLOAD_CONCURRENCY", 16, env, minimum=1, maximum=128),
        read_ahead_bytes=env_int("READ_AHEAD_MB", 128, env, minimum=1, maximum=4096) * MIB,
        max_actions=env_int("MAX_ACTIONS_PER_SHARD", 1_000_000, env, minimum=1, maximum=100_000_000),
        max_places=env_int("MAX_PLACES_PER_SHARD", 250_000, env, minimum=1, maximum=10_000_000),
        embed_threads=None
        if env_str("EMBED_THREADS", env=env) is None
        else env_int("EMBED_THREADS", 1, env, minimum=1, maximum=256),
        catalogue=catalogue,
    )
