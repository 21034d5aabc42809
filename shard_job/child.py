"""One array child: its shard's file list -> a partial on S3, `_SUCCESS.json` last."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import psycopg

from shard_job.aggregate import Aggregates, aggregate
from shard_job.config import ShardConfig
from shard_job.fetch import ObjectGone
from shard_job.fetch_process import FetchProcess
from shard_job.input_files import FileQuarantined
from shard_job.progress import Progress
from shard_job.read_shard import RejectsFile, ShardInput, add_file, defer, set_aside
from shard_job.stored_content import StoredContent, stored_content
from witple_batch import catalogue, run_state
from witple_batch.database import DatabaseUnavailable, connect_for
from witple_batch.entrypoint import Terminated
from witple_batch.logs import event
from witple_batch.metrics import emit, run_figures
from witple_batch.model_files import EMBEDDING_DIM, ModelManifest, sha256_file, verify_model_dir
from witple_batch.partials import (
    METRICS_FILE,
    REJECTS_FILE,
    SHA256_BYTES,
    SUCCESS_FILE,
    ShardPartial,
    encode_partial,
    sha256_hex,
    success_marker,
)
from witple_batch.place_text import PLACE_TEXT_VERSION, place_text, text_sha256
from witple_batch.resources import peak_rss_mb, process_age_seconds
from witple_batch.run_layout import RunLayout, ShardPlan, load_shard_plan

if TYPE_CHECKING:
    from witple_batch.embedder import Embedder

log = logging.getLogger(__name__)


NO_DIGEST = bytes(SHA256_BYTES)  # a place the catalogue does not know


def _digests(digests: list[bytes]) -> np.ndarray:
    """sha256 digests as one (n, 32) uint8 array."""
    return np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), SHA256_BYTES)


def content_vectors(texts: list[str], embedder: Embedder, stored: StoredContent) -> tuple[np.ndarray, int]:
    """One row per place: the stored vector where there is one, else each distinct text embedded once."""
    content = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)
    content[stored.rows] = stored.vectors
    missing = np.ones(len(texts), dtype=bool)
    missing[stored.rows] = False
    rows = np.flatnonzero(missing)
    wanted = [texts[row] for row in rows]
    distinct = sorted(set(wanted))
    position = {text: i for i, text in enumerate(distinct)}
    embedded = embedder.embed(distinct)
    content[rows] = embedded[[position[t] for t in wanted]]
    return content, len(distinct)


@contextmanager
def database(config: ShardConfig) -> Iterator[psycopg.Connection | None]:
    """The shard's one connection (catalogue, stored vectors, quarantine), or None without DATABASE_URL.

    When the catalogue is in the database, a database that is set but unreachable fails the child
    (Batch retries it): without the catalogue the places would get fallback texts and their
    vectors would churn. Otherwise the database only saves embedding work, and the shard goes on.
    """
    if config.common.database_url is None:
        if config.catalogue.kind == "auto":
            event(
                log,
                "no DATABASE_URL: no catalogue and no stored vectors; places get their fallback texts",
                logging.WARNING,
            )
        yield None
        return
    try:
        conn = connect_for(config.common, "shard_job")
    except DatabaseUnavailable as exc:
        if config.catalogue.kind not in ("none", "s3"):
            raise
        event(log, "stored content vectors unavailable; embedding every place", logging.WARNING, error=str(exc))
        yield None
        return
    with conn:
        yield conn


def with_places(agg: Aggregates, extra: tuple[tuple[str, str], ...]) -> Aggregates:
    """The shard's places plus `extra` (places to re-embed, with no actions), still sorted."""
    keys = sorted(set(agg.place_keys) | set(extra))
    if len(keys) == len(agg.place_keys):
        return agg
    position = {key: i for i, key in enumerate(keys)}
    remap = np.array([position[key] for key in agg.place_keys], dtype=np.int32)
    return replace(agg, place_keys=keys, pair_place=remap[agg.pair_place] if len(remap) else agg.pair_place)


def build_partial(
    shard: ShardInput,
    embedder: Embedder,
    config: ShardConfig,
    client: Any,
    conn: psycopg.Connection | None,
    refresh: tuple[tuple[str, str], ...] = (),
) -> tuple[ShardPartial, dict[str, int], dict[str, float]]:
    """Fold actions into pairs; take stored content vectors or embed each distinct place text once."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    agg = with_places(aggregate(shard.columns), refresh)
    seconds["aggregate"] = time.perf_counter() - started

    started = time.perf_counter()
    model = embedder.manifest.onnx_sha256
    entries = catalogue.lookup(config.catalogue, agg.place_keys, conn=conn, client=client)
    texts = [place_text(category, entries.get((category, place))) for category, place in agg.place_keys]
    hashes = [text_sha256(text) for text in texts]
    stored = stored_content(conn, agg.place_keys, hashes, model, PLACE_TEXT_VERSION)
    seconds["catalogue_and_stored"] = time.perf_counter() - started

    started = time.perf_counter()
    content, embedded = content_vectors(texts, embedder, stored)
    seconds["embed"] = time.perf_counter() - started
    partial = ShardPartial(
        user_ids=agg.user_ids,
        place_categories=[c for c, _ in agg.place_keys],
        place_ids=[p for _, p in agg.place_keys],
        place_content=content,
        place_text_sha256=_digests(hashes),
        place_catalogue_sha256=_digests(
            [entries[key].sha256() if key in entries else NO_DIGEST for key in agg.place_keys]
        ),
        pair_user=agg.pair_user,
        pair_place=agg.pair_place,
        pair_counts=agg.pair_counts,
        pair_first_us=agg.pair_first_us,
        pair_last_us=agg.pair_last_us,
        files=shard.files,
        content_model=model,
        place_text_version=PLACE_TEXT_VERSION,
    )
    counts = {
        "places_reused": len(stored.rows),
        "texts_embedded": embedded,
        "places_uncatalogued": len(texts) - len(entries),
    }
    return partial, counts, seconds


def read_files(
    client: Any,
    reader: FetchProcess,
    config: ShardConfig,
    layout: RunLayout,
    rejects: RejectsFile,
    conn: psycopg.Connection | None,
) -> tuple[ShardPlan, ShardInput]:
    """Every planned file into the shard: read, or set aside (over the listed-size limit, it stopped
    earlier attempts, it changed after planning, or the shard is full). Returns the plan it read
    and the shard."""
    plan = load_shard_plan(client, layout, config.array_index, config.common.partials_key)
    shard = ShardInput(
        rejects=rejects,
        # its share of the run's cap, which the files' names may understate
        max_actions=min(config.max_actions, plan.max_actions or config.max_actions),
        max_places=max(1, config.max_places - len(plan.refresh)),  # the places it re-embeds count too
    )
    progress = Progress.load(client, layout, config.array_index, config.attempt)
    readable = []
    for item in plan.files:
        try:
            if item.key in progress.suspects:
                if conn is not None:  # in the ledger now: set aside even if this run fails too
                    run_state.quarantine(conn, item, config.run_id, progress.suspects[item.key])
                raise FileQuarantined(progress.suspects[item.key])
            config.limits.check_listed_size(item.size)
        except FileQuarantined as exc:
            set_aside(shard, item, exc)
            continue
        readable.append(item)
    fetched = reader.fetch_in_order(
        config.common.region,
        plan.input_bucket,
        readable,
        config.download_concurrency,
        config.read_ahead_bytes,
        before_wait=lambda item: progress.reading(item.key),
    )
    parsing, done = False, 0
    try:
        for item, data in fetched:
            done += 1
            if isinstance(data, ObjectGone):
                event(log, "file left to the next plan", key=item.key, reason=data.reason, level=logging.WARNING)
                set_aside(shard, item, data)
            else:
                parsing = True
                add_file(shard, item, data, config.limits, plan.planned_at_us)
                parsing = False
            if shard.full:  # the rest waits for the next plan, unread
                break
    except Exception as exc:
        # an exception the file provokes in our code (MemoryError included) leaves the note, as a
        # kill does; anything else (S3, the note's own PUT, a Spot SIGTERM) is not the file's doing
        if not parsing or isinstance(exc, Terminated):
            progress.reading(None)
        raise
    progress.reading(None)
    if shard.full:
        reader.stop()
        defer(shard, readable[done:])
        event(
            log,
            "shard full: files left to the next plan",
            logging.WARNING,
            max_actions=shard.max_actions,
            max_places=shard.max_places,
            actions=len(shard.columns),
            places=len(shard.columns.place_codes),
            files_deferred=shard.files_deferred,
        )
    return plan, shard


def write_partial(
    client: Any, layout: RunLayout, index: int, partial: ShardPartial, rejects: Path, metrics: dict, key: bytes
) -> None:
    """Every file, then `_SUCCESS.json` with their sha256, signed: the shard is done exactly when it exists."""
    prefix = layout.shard_prefix(index)
    digests: dict[str, str] = {}
    for name, data in encode_partial(partial):
        client.put_object(Bucket=layout.work_bucket, Key=prefix + name, Body=data)
        digests[name] = sha256_hex(data)
    client.upload_file(str(rejects), layout.work_bucket, prefix + REJECTS_FILE)
    digests[REJECTS_FILE] = sha256_file(rejects)
    metrics_body = orjson.dumps(metrics, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    client.put_object(Bucket=layout.work_bucket, Key=prefix + METRICS_FILE, Body=metrics_body)
    digests[METRICS_FILE] = sha256_hex(metrics_body)
    marker = success_marker(partial, digests, key, layout.run_id, index)
    client.put_object(Bucket=layout.work_bucket, Key=prefix + SUCCESS_FILE, Body=marker)


def _load_embedder(model_dir: Path, threads: int | None, manifest: ModelManifest) -> tuple[Embedder, float]:
    """onnxruntime and tokenizers are imported here, on the loader's thread, off the start-up path."""
    started = time.perf_counter()
    from witple_batch.embedder import Embedder

    return Embedder(model_dir, threads=threads, manifest=manifest), time.perf_counter() - started


def run_shard(client: Any, reader: FetchProcess, config: ShardConfig) -> dict[str, Any]:
    """Returns the shard's metrics; raises on anything that should fail the child.

    The model files are checked first; the session then loads on its own thread while the database
    connects and the files are read (the embedder is first needed after the last file), except on
    a retry. Peak memory is unchanged: the model stayed resident during the read before too.
    """
    seconds = {"start": process_age_seconds()}  # interpreter, imports, settings, S3 client
    started = time.perf_counter()
    layout = RunLayout(config.common.work_bucket, config.common.work_prefix, config.run_id)
    event(log, "shard started", batch_id=config.run_id, shard=config.array_index, attempt=config.attempt)
    with (
        config.model.folder(client) as model_dir,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="model") as loader,
        tempfile.TemporaryDirectory(prefix="shard-") as tmp,
        RejectsFile(Path(tmp) / REJECTS_FILE) as rejects,
    ):
        manifest = verify_model_dir(model_dir)  # missing or changed model files fail here, before any read
        loading = loader.submit(_load_embedder, model_dir, config.embed_threads, manifest)
        if config.attempt > 1:
            # a retry reads under progress notes that blame the file being read for a crash: a model
            # that takes the process down must do it before the first note
            loading.result()
        connect_started = time.perf_counter()
        with database(config) as conn:
            seconds["connect"] = time.perf_counter() - connect_started
            read_started = time.perf_counter()
            plan, shard = read_files(client, reader, config, layout, rejects, conn)
            seconds["read"] = time.perf_counter() - read_started
            rejects.close()
            wait_started = time.perf_counter()
            embedder, seconds["model_load"] = loading.result()  # on the loader's thread, under connect + read
            seconds["model_wait"] = time.perf_counter() - wait_started
            partial, content_counts, stage_seconds = build_partial(shard, embedder, config, client, conn, plan.refresh)
            seconds |= stage_seconds
        write_started = time.perf_counter()
        metrics: dict[str, Any] = {
            "batch_id": config.run_id,
            "shard": config.array_index,
            "attempt": config.attempt,
            "files": len(shard.files),
            "files_rejected": shard.files_rejected,
            "files_quarantined": shard.files_quarantined,
            "files_deferred": shard.files_deferred,
            "bytes": sum(f["size"] for f in shard.files),
            "decompressed_bytes": shard.decompressed_bytes,
            "records_read": shard.records_read,
            "records_accepted": shard.records_accepted,
            "records_rejected": shard.records_rejected,
            "users": len(partial.user_ids),
            "places": len(partial.place_ids),
            "pairs": len(partial.pair_user),
            **content_counts,
            "embed_threads": embedder.threads,
            # metrics.json cannot time its own upload; the log line below adds write and total
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            # both processes' peaks added: a bound on the container's, which its memory limit is for
            "peak_rss_mb": round(peak_rss_mb() + reader.peak_rss_mb, 1),
            "reader_peak_rss_mb": reader.peak_rss_mb,
        }
        write_partial(client, layout, config.array_index, partial, rejects.path, metrics, config.common.partials_key)
    metrics["seconds"].update(
        write=round(time.perf_counter() - write_started, 3), total=round(time.perf_counter() - started, 3)
    )
    event(log, "shard finished", **metrics)
    process_seconds = metrics["seconds"]["start"] + metrics["seconds"]["total"]  # as the reduce counts its own
    emit("shard", run_figures(metrics, process_seconds, metrics["peak_rss_mb"]))
    return metrics
