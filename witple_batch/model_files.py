"""The exported model folder: three files and the manifest that vouches for them.

Written by export_model, read by the embedder; one definition so the two cannot drift.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from witple_batch.errors import PermanentError

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "model_manifest.json"
MODEL_FILES = (MODEL_FILE, TOKENIZER_FILE, MANIFEST_FILE)
EMBEDDING_DIM = 384
MANIFEST_VERSION = 1
# model.onnx metadata: the text every input is prefixed with (e5's "query: "); absent means none
TEXT_PREFIX_KEY = "witple.text_prefix"


class ModelError(PermanentError):
    """The model folder is missing, incomplete or does not match its manifest (a retry cannot fix the image)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelManifest:
    dim: int
    max_seq_length: int
    onnx_sha256: str
    tokenizer_sha256: str
    raw: dict[str, Any]

    @classmethod
    def parse(cls, raw: dict[str, Any], where: str) -> ModelManifest:
        try:
            manifest = cls(
                dim=int(raw["dim"]),
                max_seq_length=int(raw["max_seq_length"]),
                onnx_sha256=str(raw["onnx_sha256"]),
                tokenizer_sha256=str(raw["tokenizer_sha256"]),
                raw=raw,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where}: manifest field missing or malformed: {exc}") from None
        if manifest.dim != EMBEDDING_DIM:
            raise ModelError(f"{where}: manifest dim is {manifest.dim}, this system stores {EMBEDDING_DIM}")
        if not 8 <= manifest.max_seq_length <= 512:
            raise ModelError(f"{where}: manifest max_seq_length {manifest.max_seq_length} is out of range")
        return manifest


def read_manifest(model_dir: Path) -> ModelManifest:
    path = model_dir / MANIFEST_FILE
    if not model_dir.is_dir():
        raise ModelError(f"model folder {model_dir} does not exist (run: python -m export_model --output {model_dir})")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{path} is missing (run: python -m export_model --output {model_dir})") from None
    return parse_manifest(data, str(path))


def parse_manifest(data: bytes, where: str) -> ModelManifest:
    """A manifest's bytes, wherever they were read (a folder, or S3 for MODEL_URI)."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ModelError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{where} must hold a JSON object")
    return ModelManifest.parse(raw, where)


def verify_model_dir(model_dir: Path) -> ModelManifest:
    """Check every file against the manifest so a truncated copy fails at start, not mid-run."""
    manifest = read_manifest(model_dir)
    for name, expected in ((MODEL_FILE, manifest.onnx_sha256), (TOKENIZER_FILE, manifest.tokenizer_sha256)):
        path = model_dir / name
        if not path.is_file():
            raise ModelError(f"{path} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelError(
                f"{path} is corrupt: sha256 {actual[:12]}... does not match the manifest's {expected[:12]}..."
            )
    return manifest
