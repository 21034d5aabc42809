"""One array child: its shard of the manifest -> a partial on S3, `_SUCCESS.json` last."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from shard_job.config import ShardConfig
from shard_job.fetch import fetch_in_order
from shard_job.read_shard import ShardInput, add_file
from shard_job.stored_content import StoredContent, stored_content
from witple_batch.aggregate import aggregate, weighted_row_sums
from witple_batch.embedder import Embedder
from witple_batch.logs import event
from witple_batch.model_files import EMBEDDING_DIM, MODEL_FILES
from witple_batch.partials import ShardPartial, encode_partial, id_array
from witple_batch.place_text import PLACE_TEXT_VERSION, place_text
from witple_batch.resources import peak_rss_mb
from witple_batch.run_layout import RunLayout, load_manifest
from witple_batch.s3 import parse_s3_uri
from witple_batch.settings import ConfigError

log = logging.getLogger(__name__)


@contextmanager
def model_folder(client: Any, config: ShardConfig) -> Iterator[Path]:
    """MODEL_DIR as is, or MODEL_URI's three files fetched into a temporary folder."""
    if config.model_uri is None:
        yield config.model_dir
        return
    bucket, key_prefix = parse_s3_uri(config.model_uri)
    key_prefix = key_prefix.rstrip("/") + "/" if key_prefix else ""
    with tempfile.TemporaryDirectory(prefix="model-") as tmp:
        for name in MODEL_FILES:
            client.download_file(bucket, key_prefix + name, str(Path(tmp) / name))
        yield Path(tmp)


def content_vectors(keys: list[tuple[str, str]], embedder: Embedder, stored: StoredContent) -> tuple[np.ndarray, int]:
    """One row per place key: the stored vector where there is one, else each distinct text embedded once."""
    content = np.empty((len(keys), EMBEDDING_DIM), dtype=np.float32)
    content[stored.rows] = stored.vectors
    missing = np.ones(len(keys), dtype=bool)
    missing[stored.rows] = False
    rows = np.flatnonzero(missing)
    texts = [place_text(*keys[row]) for row in rows]
    distinct = sorted(set(texts))
    position = {text: i for i, text in enumerate(distinct)}
    embedded = embedder.embed(distinct)
    content[rows] = embedded[[position[t] for t in texts]]
    return content, len(distinct)


def build_partial(
    shard: ShardInput, embedder: Embedder, type_weights: np.ndarray, database_url: str | None
) -> tuple[ShardPartial, dict[str, int], dict[str, float]]:
    """Aggregate, take stored content vectors or embed each distinct place text once, sum user vectors."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    agg = aggregate(shard.columns, type_weights)
    seconds["aggregate"] = time.perf_counter() - started

    started = time.perf_counter()
    model = embedder.manifest.onnx_sha256
    stored = stored_content(database_url, agg.place_keys, model, PLACE_TEXT_VERSION)
    seconds["stored_content"] = time.perf_counter() - started

    started = time.perf_counter()
    content, embedded = content_vectors(agg.place_keys, embedder, stored)
    seconds["embed"] = time.perf_counter() - started

    started = time.perf_counter()
    user_sum = weighted_row_sums(agg.pair_user, agg.pair_place, agg.pairs.weight, content, len(agg.user_ids))
    seconds["user_vectors"] = time.perf_counter() - started
    partial = ShardPartial(
        user_ids=id_array(agg.user_ids),
        users=agg.users,
        user_vector_sum=user_sum.astype(np.float32),
        place_categories=id_array([c for c, _ in agg.place_keys]),
        place_ids=id_array([p for _, p in agg.place_keys]),
        places=agg.places,
        place_content=content,
        pair_user=agg.pair_user,
        pair_place=agg.pair_place,
        pairs=agg.pairs,
        files=shard.files,
        content_model=model,
        place_text_version=PLACE_TEXT_VERSION,
    )
    return partial, {"places_reused": len(stored.rows), "texts_embedded": embedded}, seconds


def run_shard(client: Any, config: ShardConfig) -> dict[str, Any]:
    """Returns the shard's metrics; raises on anything that should fail the child."""
    started = time.perf_counter()
    layout = RunLayout(config.common.work_bucket, config.common.work_prefix, config.batch_id)
    manifest = load_manifest(client, layout)
    if config.array_index >= len(manifest.shards):
        raise ConfigError(
            f"AWS_BATCH_JOB_ARRAY_INDEX {config.array_index} is outside the {len(manifest.shards)} planned shards"
        )
    files = list(manifest.shards[config.array_index])
    event(
        log,
        "shard started",
        batch_id=config.batch_id,
        shard=config.array_index,
        files=len(files),
        bytes=sum(f.size for f in files),
        attempt=config.attempt,
    )

    with model_folder(client, config) as model_dir:
        embedder = Embedder(model_dir, threads=config.embed_threads)

    read_started = time.perf_counter()
    shard = ShardInput()
    for item, data in fetch_in_order(client, manifest.input_bucket, files, config.download_concurrency):
        add_file(shard, item, data, config.max_decompressed_bytes)
    read_seconds = time.perf_counter() - read_started

    partial, content_counts, seconds = build_partial(shard, embedder, config.type_weights, config.common.database_url)
    seconds = {"read": read_seconds, **seconds}

    write_started = time.perf_counter()
    metrics: dict[str, Any] = {
        "batch_id": config.batch_id,
        "shard": config.array_index,
        "files": len(files),
        "files_rejected": shard.files_rejected,
        "bytes": sum(f.size for f in files),
        "decompressed_bytes": shard.decompressed_bytes,
        "records_read": shard.records_read,
        "records_accepted": shard.records_accepted,
        "records_rejected": shard.records_rejected,
        "users": len(partial.users),
        "places": len(partial.places),
        "pairs": len(partial.pairs),
        **content_counts,
        "embed_threads": embedder.threads,
        # metrics.json cannot time its own upload; the log line below adds write and total
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    prefix = layout.shard_prefix(config.array_index)
    for name, data in encode_partial(partial, shard.rejects, metrics):
        client.put_object(Bucket=layout.work_bucket, Key=prefix + name, Body=data)
    metrics["seconds"].update(
        write=round(time.perf_counter() - write_started, 3), total=round(time.perf_counter() - started, 3)
    )
    event(log, "shard finished", **metrics)
    return metrics
