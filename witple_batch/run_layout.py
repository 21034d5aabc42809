"""Where a run's files live under the work location, and the plan the planner writes there.

A plan is one small manifest (the run's totals and one line per shard) plus one file list per
shard, so a child of a 10,000-child array reads its own list, not everybody's. Both are written
create-only (a planned run never changes under the children reading it) and signed with the
run key (signing.py): a list rewritten by anyone else is refused by the child that reads it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from witple_batch.errors import PermanentError
from witple_batch.s3 import get_bytes
from witple_batch.signing import sign, verify

MANIFEST_FORMAT = "witple-run-manifest-v2"
SHARD_PLAN_FORMAT = "witple-shard-plan-v1"


class ManifestError(PermanentError):
    """The run manifest or a shard's file list is missing or malformed (a retry reads the same bytes)."""


def _document(data: bytes, expected_format: str, where: str, key: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ManifestError(f"{where}: not JSON") from None
    if not isinstance(body, dict) or body.get("format") != expected_format:
        raise ManifestError(f"{where}: not a {expected_format} document")
    return verify(body, key, where)


@dataclass(frozen=True)
class RunLayout:
    work_bucket: str
    work_prefix: str
    run_id: str

    @property
    def run_prefix(self) -> str:
        return f"{self.work_prefix}runs/{self.run_id}/"

    @property
    def manifest_key(self) -> str:
        return f"{self.run_prefix}manifest.json"

    @property
    def report_key(self) -> str:
        return f"{self.run_prefix}report.json"

    def shard_plan_key(self, index: int) -> str:
        return f"{self.run_prefix}plan/{index:05d}.json"

    def shard_prefix(self, index: int) -> str:
        return f"{self.run_prefix}shards/{index:05d}/"

    def progress_key(self, index: int) -> str:
        """Where a retried child notes the file it is reading, so the next attempt can quarantine it."""
        return f"{self.run_prefix}progress/{index:05d}.json"

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
class ShardPlan:
    """One child's file list, with when the batch was planned (records are judged against that time)."""

    run_id: str
    index: int
    input_bucket: str
    planned_at_us: int
    files: tuple[InputFile, ...]
    refresh: tuple[tuple[str, str], ...] = ()  # places whose stored content another model or text made
    max_actions: int | None = None  # its share of the run's action cap (None: only MAX_ACTIONS_PER_SHARD)

    def to_json(self, key: bytes) -> bytes:
        body = {
            "format": SHARD_PLAN_FORMAT,
            "batch_id": self.run_id,
            "shard": self.index,
            "input_bucket": self.input_bucket,
            "planned_at_us": self.planned_at_us,
            "files": [f.as_dict() for f in self.files],
            "refresh": [list(place) for place in self.refresh],
            "max_actions": self.max_actions,
        }
        return orjson.dumps(sign(body, key))

    @classmethod
    def from_json(cls, data: bytes, where: str, key: bytes) -> ShardPlan:
        body = _document(data, SHARD_PLAN_FORMAT, where, key)
        try:
            return cls(
                run_id=str(body["batch_id"]),
                index=int(body["shard"]),
                input_bucket=str(body["input_bucket"]),
                planned_at_us=int(body["planned_at_us"]),
                refresh=tuple((str(c), str(p)) for c, p in body.get("refresh", [])),
                max_actions=None if body.get("max_actions") is None else int(body["max_actions"]),
                files=tuple(
                    InputFile(key=str(f["key"]), size=int(f["size"]), etag=str(f["etag"])) for f in body["files"]
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{where}: malformed shard plan: {exc!r}") from None


@dataclass(frozen=True)
class RunManifest:
    """The run's summary: one entry per shard with its plan's sha256, file count and bytes."""

    run_id: str
    input_bucket: str
    input_prefix: str
    created_at: str
    shards: tuple[dict[str, Any], ...]  # {"files": n, "bytes": b, "sha256": hex}

    @property
    def files(self) -> int:
        return sum(int(s["files"]) for s in self.shards)

    @property
    def total_bytes(self) -> int:
        return sum(int(s["bytes"]) for s in self.shards)

    def to_json(self, key: bytes) -> bytes:
        body = {
            "format": MANIFEST_FORMAT,
            "batch_id": self.run_id,
            "input": {"bucket": self.input_bucket, "prefix": self.input_prefix},
            "created_at": self.created_at,
            "files": self.files,
            "bytes": self.total_bytes,
            "shards": list(self.shards),
        }
        return orjson.dumps(sign(body, key), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes, where: str, key: bytes) -> RunManifest:
        body = _document(data, MANIFEST_FORMAT, where, key)
        try:
            shards = tuple(
                {"files": int(s["files"]), "bytes": int(s["bytes"]), "sha256": str(s["sha256"])} for s in body["shards"]
            )
            return cls(
                run_id=str(body["batch_id"]),
                input_bucket=str(body["input"]["bucket"]),
                input_prefix=str(body["input"]["prefix"]),
                created_at=str(body["created_at"]),
                shards=shards,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{where}: malformed run manifest: {exc!r}") from None


def shard_entry(plan: ShardPlan, body: bytes) -> dict[str, Any]:
    return {"files": len(plan.files), "bytes": sum(f.size for f in plan.files), "sha256": _sha256(body)}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_manifest(client: Any, layout: RunLayout, key: bytes) -> RunManifest:
    body = get_bytes(client, layout.work_bucket, layout.manifest_key)
    if body is None:
        raise ManifestError(f"no run manifest at {layout.uri(layout.manifest_key)} (was the batch planned?)")
    return RunManifest.from_json(body, layout.uri(layout.manifest_key), key)


def load_shard_plan(client: Any, layout: RunLayout, index: int, key: bytes, sha256: str | None = None) -> ShardPlan:
    """A child's file list, signed by the planner; with `sha256` (the reduce's check), it must
    also be the bytes the manifest lists."""
    where = layout.uri(layout.shard_plan_key(index))
    body = get_bytes(client, layout.work_bucket, layout.shard_plan_key(index))
    if body is None:
        raise ManifestError(f"no shard plan at {where} (was the batch planned with this many shards?)")
    if sha256 is not None and _sha256(body) != sha256:
        raise ManifestError(f"{where} does not match the run manifest (changed after planning)")
    plan = ShardPlan.from_json(body, where, key)
    if plan.run_id != layout.run_id or plan.index != index:
        raise ManifestError(f"{where} belongs to run {plan.run_id!r} shard {plan.index}")
    return plan


def load_report(client: Any, layout: RunLayout) -> dict[str, Any]:
    """The reduce's report.json of a committed batch (the local runner and the benchmarks read it)."""
    return orjson.loads(client.get_object(Bucket=layout.work_bucket, Key=layout.report_key)["Body"].read())
