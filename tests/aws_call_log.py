"""Every AWS call a process makes, as JSON lines: service, operation, the caller's access key, the
program making it and the parameters that name a resource. The IAM tests read it to tell which actions each role's jobs
call. Installed in a process by `install`, in the jobs' processes by aws_call_log_site/sitecustomize.py
(AWS_CALL_LOG names the file)."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAMING = ("Bucket", "Key", "Prefix", "jobQueue", "jobDefinition", "SecretId", "repositoryName", "logGroupName")
# S3 operations whose IAM action has another name (Service Authorization Reference, "API operations")
S3_ACTIONS = {
    "ListObjectsV2": "ListBucket",
    "ListObjects": "ListBucket",
    "HeadObject": "GetObject",
    "CreateMultipartUpload": "PutObject",
    "UploadPart": "PutObject",
    "CompleteMultipartUpload": "PutObject",
}
SITE = Path(__file__).parent / "aws_call_log_site"


@dataclass(frozen=True)
class Call:
    key: str  # the caller's access key id
    action: str  # as IAM names it, e.g. s3:ListBucket
    operation: str
    program: str  # e.g. "shard_job check", "coordinator submit", "pytest" (Fargate's part)
    params: dict[str, Any]


def _program() -> str:
    """`python -m shard_job check` -> "shard_job check" (argv[0] is the module's __main__.py)."""
    first = Path(sys.argv[0])
    name = first.parent.name if first.name == "__main__.py" else first.name
    words = [name, *(word for word in sys.argv[1:2] if not word.startswith("-"))]
    return " ".join(words)


def _remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    context["aws_call_log"] = {name: params[name] for name in NAMING if name in params}


def _record(path: str, model: Any, context: dict[str, Any], request_signer: Any, **_: Any) -> None:
    credentials = request_signer._credentials
    line = {
        "service": model.service_model.signing_name,
        "operation": model.name,
        "key": credentials.access_key if credentials else None,
        "program": _program(),
        "params": context.get("aws_call_log", {}),
    }
    # one write per line on an O_APPEND file: lines from concurrent threads and processes stay whole
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def install(path: str) -> Callable[[], None]:
    """Record the calls of every botocore session made after this in this process; returns what undoes it."""
    import botocore.session

    original = botocore.session.Session.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.register("before-parameter-build", _remember)
        self.register("before-call", functools.partial(_record, path))

    botocore.session.Session.__init__ = init  # type: ignore[method-assign]
    return lambda: setattr(botocore.session.Session, "__init__", original)


@contextmanager
def recording(path: Path) -> Iterator[None]:
    """This process's calls recorded to `path` while inside."""
    uninstall = install(str(path))
    try:
        yield
    finally:
        uninstall()


def read(path: Path) -> list[Call]:
    calls = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        service, operation = record["service"], record["operation"]
        action = S3_ACTIONS.get(operation, operation) if service == "s3" else operation
        calls.append(Call(record["key"], f"{service}:{action}", operation, record["program"], record["params"]))
    return calls


def environment(path: Path, repo: Path) -> dict[str, str]:
    """What a child process needs in its environment to record its calls to `path`."""
    return {"AWS_CALL_LOG": str(path), "PYTHONPATH": os.pathsep.join([str(SITE), str(repo)])}
