"""`check`: whether a job could do its work here and now, one line per check, exit 0 or 2; and
`reachable`, the same S3 question every job asks in its first seconds.

`check` is run by an operator after a deploy and (with `--local`: settings and model files only,
no network) by the images' HEALTHCHECK under `docker run` (Batch runs no health check). Each
check says what it looked at; a failure says why in one line, with secrets masked.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from witple_batch.entrypoint import refused_by_aws
from witple_batch.errors import EXIT_CONFIG, ConfigError
from witple_batch.logs import mask_secrets
from witple_batch.model_files import verify_model_dir
from witple_batch.settings import CommonConfig
from witple_batch.webhook import origin

CHECK_BATCH_ID = "preflight-check"  # stands in for BATCH_ID, which only a run has


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


Check = tuple[str, Callable[[], str]]


def run_checks(checks: list[Check]) -> list[Result]:
    results = []
    for name, check in checks:
        try:
            results.append(Result(name, True, check()))
        except Exception as exc:  # noqa: BLE001 - every failure becomes its line; none may stop the others
            results.append(Result(name, False, _one_line(exc)))
    return results


def report(results: list[Result]) -> int:
    for result in results:
        sys.stdout.write(result.line() + "\n")
    return 0 if all(r.ok for r in results) else EXIT_CONFIG


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        text = f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    else:
        text = str(exc) or type(exc).__name__
    return mask_secrets(" ".join(text.split()))


def settings_check(build: Callable[[dict[str, str]], CommonConfig]) -> tuple[CommonConfig | None, Result]:
    """The job's settings as its run would read them (BATCH_ID, which only a run has, stood in)."""
    env = dict(os.environ)
    env["BATCH_ID"] = env.get("BATCH_ID") or CHECK_BATCH_ID
    try:
        common = build(env)
    except ConfigError as exc:
        return None, Result("settings", False, str(exc))
    webhook = f"webhook {origin(common.webhook_url)}" if common.webhook_url else "no webhook"
    detail = f"input {common.s3_input_path}, work s3://{common.work_bucket}/{common.work_prefix}, {webhook}"
    return common, Result("settings", True, detail)


def model_check(model_dir: Path, shown: str | None = None) -> Check:
    """The model files against their manifest; `shown`: where they came from, if not model_dir."""

    def check() -> str:
        manifest = verify_model_dir(model_dir)
        return f"{shown or model_dir}: files match the manifest (model.onnx sha256 {manifest.onnx_sha256[:12]}...)"

    return "model", check


def s3_checks(client: Any, config: CommonConfig, *, list_input: bool, write_work: bool) -> list[Check]:
    """Listing the input, and reading and writing the work prefix (a probe object, deleted)."""

    def listing() -> str:
        try:
            client.list_objects_v2(Bucket=config.s3_bucket, Prefix=config.s3_prefix, MaxKeys=1)
        except BotoCoreError as exc:
            raise RuntimeError(f"S3 unreachable: {exc}") from None
        return f"can list {config.s3_input_path}"

    def work() -> str:
        key = f"{config.work_prefix}_checks/{uuid.uuid4().hex}"
        where = f"s3://{config.work_bucket}/{key}"
        try:
            client.put_object(Bucket=config.work_bucket, Key=key, Body=b"check")
            client.get_object(Bucket=config.work_bucket, Key=key)["Body"].read()
            client.delete_object(Bucket=config.work_bucket, Key=key)
        except ClientError as exc:
            raise RuntimeError(f"cannot write and read {where}: {_one_line(exc)}") from None
        except BotoCoreError as exc:
            raise RuntimeError(f"S3 unreachable: {exc}") from None
        return f"can write, read and delete under s3://{config.work_bucket}/{config.work_prefix}"

    return ([("s3 input", listing)] if list_input else []) + ([("s3 work", work)] if write_work else [])


def database_check(config: CommonConfig, application: str) -> Check:
    """Reachable in one attempt, and every migration this image ships applied."""

    def check() -> str:
        from witple_batch.database import connect
        from witple_batch.schema import migrations, plan

        if config.database_url is None:
            raise RuntimeError("DATABASE_URL is not set")
        with connect(config.database_url, attempts=1, autocommit=True, application=application) as conn:
            pending = [f"{m.version:03d}_{m.name}" for m, _ in plan(conn)]
        if pending:
            raise RuntimeError(
                f"not migrated: {len(pending)} pending ({', '.join(pending)}); run python -m reduce_job migrate"
            )
        return f"{mask_secrets(config.database_url)} reachable, migrated to {migrations()[-1].version:03d}"

    return "database", check


def reachable(client: Any, config: CommonConfig, *, list_input: bool = False) -> None:
    """A job's first calls: its work prefix (and the input, for a job that lists it) answers now.

    Refused (the role's or the bucket's policy, a wrong bucket or region): ConfigError, exit 2,
    which the retry strategy does not retry. Unreachable or failing (network, throttling, 5xx):
    the error itself, exit 1, which it retries. `client` should retry little (seconds, not minutes).
    """
    places = [(config.work_bucket, config.work_prefix)]
    if list_input:
        places.append((config.s3_bucket, config.s3_prefix))
    for bucket, prefix in places:
        try:
            client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except ClientError as exc:
            if refused_by_aws(exc):
                raise ConfigError(f"s3://{bucket}/{prefix} refused this job: {_one_line(exc)}") from None
            raise
