"""Where a run's files live under the work location, and the run manifest the planner writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from witple_batch.s3 import get_bytes

MANIFEST_FORMAT = "witple-run-manifest-v1"


class ManifestError(Exception):
    """The run manifest is missing or malformed."""


@dataclass(frozen=True)
class RunLayout:
    work_bucket: str
    work_prefix: str
    batch_id: str

    @property
    def run_prefix(self) -> str:
        return f"{self.work_prefix}runs/{self.batch_id}/"

    @property
    def manifest_key(self) -> str:
        return f"{self.run_prefix}manifest.json"

    @property
    def report_key(self) -> str:
        return f"{self.run_prefix}report.json"

    def shard_prefix(self, index: int) -> str:
        return f"{self.run_prefix}shards/{index:05d}/"

    def uri(self, key: str) -> str:
        return f"s3://{self.work_bucket}/{key}"


@dataclass(frozen=True)
class InputFile:
    key: str
    size: int
    etag: str

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "etag": self.etag}


@dataclass(frozen=True)
class RunManifest:
    batch_id: str
    input_bucket: str
    input_prefix: str
    created_at: str
    shards: tuple[tuple[InputFile, ...], ...]

    @property
    def files(self) -> list[InputFile]:
        return [f for shard in self.shards for f in shard]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        body = {
            "format": MANIFEST_FORMAT,
            "batch_id": self.batch_id,
            "input": {"bucket": self.input_bucket, "prefix": self.input_prefix},
            "created_at": self.created_at,
            "files": len(self.files),
            "bytes": self.total_bytes,
            "shards": [[f.as_dict() for f in shard] for shard in self.shards],
        }
        return orjson.dumps(body, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes, where: str) -> RunManifest:
        try:
            body = orjson.loads(data)
            if body["format"] != MANIFEST_FORMAT:
                raise ManifestError(f"{where}: unknown manifest format {body['format']!r}")
            return cls(
                batch_id=str(body["batch_id"]),
                input_bucket=str(body["input"]["bucket"]),
                input_prefix=str(body["input"]["prefix"]),
                created_at=str(body["created_at"]),
                shards=tuple(
                    tuple(InputFile(key=str(f["key"]), size=int(f["size"]), etag=str(f["etag"])) for f in shard)
                    for shard in body["shards"]
                ),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{where}: malformed run manifest: {exc!r}") from None


def load_manifest(client: Any, layout: RunLayout) -> RunManifest:
    body = get_bytes(client, layout.work_bucket, layout.manifest_key)
    if body is None:
        raise ManifestError(f"no run manifest at {layout.uri(layout.manifest_key)} (was the batch planned?)")
    return RunManifest.from_json(body, layout.uri(layout.manifest_key))


def load_report(client: Any, layout: RunLayout) -> dict[str, Any]:
    """The reduce's report.json of a committed batch (the local runner and the benchmarks read it)."""
    return orjson.loads(client.get_object(Bucket=layout.work_bucket, Key=layout.report_key)["Body"].read())
