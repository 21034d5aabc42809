"""Where the shards' model comes from: MODEL_URI's folder on S3 when set, else MODEL_DIR.

One definition for the child, which needs the files, and the planner, which needs only the
manifest to know which space the children will embed in (which places to re-embed).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from witple_batch.errors import ConfigError
from witple_batch.model_files import MANIFEST_FILE, MODEL_FILES, ModelError, parse_manifest, read_manifest
from witple_batch.s3 import get_bytes, parse_s3_uri
from witple_batch.settings import env_str

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / ".cache" / "model"


@dataclass(frozen=True)
class ModelSource:
    model_dir: Path
    model_uri: str | None  # s3://bucket/prefix/ holding MODEL_FILES; wins over model_dir

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ModelSource:
        uri = env_str("MODEL_URI", env=env)
        if uri is not None:
            try:
                parse_s3_uri(uri)
            except ConfigError:
                raise ConfigError(f"MODEL_URI must be an s3://bucket/prefix URI, got {uri!r}") from None
        return cls(Path(env_str("MODEL_DIR", str(DEFAULT_MODEL_DIR), env) or DEFAULT_MODEL_DIR), uri)

    def _location(self) -> tuple[str, str]:
        bucket, prefix = parse_s3_uri(self.model_uri or "")  # checked in from_env
        return bucket, prefix.rstrip("/") + "/" if prefix else ""

    @contextmanager
    def folder(self, client: Any) -> Iterator[Path]:
        """MODEL_DIR as is, or MODEL_URI's three files fetched into a temporary folder."""
        if self.model_uri is None:
            yield self.model_dir
            return
        bucket, prefix = self._location()
        with tempfile.TemporaryDirectory(prefix="model-") as tmp:
            for name in MODEL_FILES:
                client.download_file(bucket, prefix + name, str(Path(tmp) / name))
            yield Path(tmp)

    def onnx_sha256(self, client: Any) -> str:
        """The model's identity as its manifest gives it, read without the other two files."""
        if self.model_uri is None:
            return read_manifest(self.model_dir).onnx_sha256
        bucket, prefix = self._location()
        where = f"{self.model_uri.rstrip('/')}/{MANIFEST_FILE}"
        data = get_bytes(client, bucket, prefix + MANIFEST_FILE)
        if data is None:
            raise ModelError(f"{where} is missing")
        return parse_manifest(data, where).onnx_sha256
