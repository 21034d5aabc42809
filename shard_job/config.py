"""The array child's settings, read once from the environment Batch gives it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from witple_batch.config import DEFAULT_WEIGHTS, CommonConfig, common_from_env, parse_weights, required_batch_id
from witple_batch.settings import ConfigError, env_int, env_str

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / ".cache" / "model"


@dataclass(frozen=True)
class ShardConfig:
    common: CommonConfig
    batch_id: str
    array_index: int
    array_size: int | None
    attempt: int
    model_dir: Path
    model_uri: str | None
    max_decompressed_bytes: int
    download_concurrency: int
    type_weights: np.ndarray
    embed_threads: int | None

    @property
    def last_attempt(self) -> bool:
        return self.attempt >= self.common.job_attempts


def shard_config_from_env(env: Mapping[str, str] | None = None) -> ShardConfig:
    common = common_from_env(env)
    model_uri = env_str("MODEL_URI", env=env)
    if model_uri is not None and not model_uri.startswith("s3://"):
        raise ConfigError("MODEL_URI must be an s3:// URI")
    size = env_str("AWS_BATCH_JOB_ARRAY_SIZE", env=env)
    return ShardConfig(
        common=common,
        batch_id=required_batch_id(env),
        array_index=env_int("AWS_BATCH_JOB_ARRAY_INDEX", 0, env, minimum=0, maximum=9_999),
        array_size=None if size is None else env_int("AWS_BATCH_JOB_ARRAY_SIZE", 1, env, minimum=1),
        attempt=env_int("AWS_BATCH_JOB_ATTEMPT", 1, env, minimum=1),
        model_dir=Path(env_str("MODEL_DIR", str(DEFAULT_MODEL_DIR), env) or DEFAULT_MODEL_DIR),
        model_uri=model_uri,
        max_decompressed_bytes=env_int("MAX_DECOMPRESSED_MB", 256, env, minimum=1, maximum=4096) * 1024 * 1024,
        download_concurrency=env_int("DOWNLOAD_CONCURRENCY", 16, env, minimum=1, maximum=128),
        type_weights=parse_weights(env_str("ACTION_WEIGHTS", DEFAULT_WEIGHTS, env) or DEFAULT_WEIGHTS),
        embed_threads=None
        if env_str("EMBED_THREADS", env=env) is None
        else env_int("EMBED_THREADS", 1, env, minimum=1),
    )
