"""The shard's GETs in a process of their own, so the read uses both of the child's vCPUs.

One Python process cannot: botocore spends ~1.3 ms of CPU on each GET and parsing ~12 us on
each record, all under one GIL, so a shard read one file per ~2.1 ms of CPU whatever the S3
latency (`benchmarks/shard_bench.py`). Here the GETs run in a child process (`fetch_in_order`,
its threads and read-ahead bound unchanged) that writes each result down a pipe, in plan
order, while the shard parses the one before.

Memory: the process holds at most fetch_in_order's window (2x concurrency bodies, at most
`read_ahead_bytes` listed bytes, or one larger file alone), plus what the pipe buffers (64 KiB
on Linux); it blocks on the pipe when the shard falls behind. The shard holds the one body it
is parsing.

The process lives no longer than the shard: it exits when its stdin closes (the shard is done,
or dead: killed, out of memory) and is killed when the shard stops reading early. A GET that
fails after boto3's retries, or the process dying, raises FetchError in the shard, as a GET
failing in the shard's own threads did.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

import orjson

from shard_job.fetch import FetchError, ObjectGone
from witple_batch.run_layout import InputFile

_FRAME = struct.Struct("<IBQ")  # file index, kind, payload length
_BODY, _GONE, _FAILED, _DONE = range(4)


class FetchProcess:
    """The GET process, started early so its imports overlap the shard's own start-up."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self.peak_rss_mb = 0.0  # the process's own VmHWM, known once every file is fetched

    @property
    def pid(self) -> int:
        return self._process.pid

    @classmethod
    @contextmanager
    def started(cls, env: Mapping[str, str] | None = None) -> Iterator[FetchProcess]:
        """`env`: the process's environment (AWS settings and credentials), this one's by default."""
        # stderr is inherited: its log lines, and a crash before the first frame, reach the job's log
        process = subprocess.Popen(
            [sys.executable, "-m", "shard_job.fetch_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=None if env is None else dict(env),
        )
        try:
            yield cls(process)
        finally:
            process.kill()
            process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()

    def fetch_in_order(
        self,
        region: str,
        bucket: str,
        files: list[InputFile],
        concurrency: int,
        read_ahead_bytes: int,
        before_wait: Callable[[InputFile], None] = lambda _item: None,
    ) -> Iterator[tuple[InputFile, bytes | ObjectGone]]:
        """fetch.fetch_in_order's contract, once per process: results in plan order, and
        `before_wait(item)` before waiting for each."""
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        request = {
            "region": region,
            "bucket": bucket,
            "files": [item.as_dict() for item in files],
            "concurrency": concurrency,
            "read_ahead_bytes": read_ahead_bytes,
        }
        try:
            stdin.write(orjson.dumps(request) + b"\n")
            stdin.flush()
        except BrokenPipeError:
            raise FetchError(self._stopped()) from None
        for index, item in enumerate(files):
            before_wait(item)
            kind, payload = self._frame(stdout, index)
            if kind == _BODY:
                yield item, payload
            elif kind == _GONE:
                yield item, ObjectGone(payload.decode())
            else:
                raise FetchError(payload.decode())
        _kind, payload = self._frame(stdout, len(files), expect=_DONE)
        self.peak_rss_mb = float(orjson.loads(payload)["peak_rss_mb"])

    def _frame(self, stdout: IO[bytes], index: int, expect: int | None = None) -> tuple[int, bytes]:
        header = stdout.read(_FRAME.size)
        if len(header) < _FRAME.size:
            raise FetchError(self._stopped())
        got, kind, length = _FRAME.unpack(header)
        payload = stdout.read(length)
        if len(payload) < length:
            raise FetchError(self._stopped())
        if kind == _FAILED:
            return kind, payload
        if got != index or (expect is not None and kind != expect):
            raise FetchError(f"the S3 reader process answered out of order (frame {got} kind {kind}, wanted {index})")
        return kind, payload

    def _stopped(self) -> str:
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return f"the S3 reader process stopped before it had fetched every file (exit code {code})"


def _write(out: IO[bytes], index: int, kind: int, payload: bytes) -> None:
    out.write(_FRAME.pack(index, kind, len(payload)))
    out.write(payload)
    out.flush()


def _exit_when_stdin_closes(stdin: IO[bytes]) -> None:
    stdin.read()  # nothing more is sent: this returns when the shard closes the pipe or dies
    os._exit(0)


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The process's side: one request, every file's frame in order, then its peak memory."""
    from shard_job.fetch import fetch_in_order
    from witple_batch.logs import configure, log_level
    from witple_batch.resources import peak_rss_mb
    from witple_batch.s3 import s3_client

    configure("shard_job.fetch_process", log_level() or "INFO")

    line = stdin.readline()
    if not line:
        return
    threading.Thread(target=_exit_when_stdin_closes, args=(stdin,), daemon=True).start()
    request: dict[str, Any] = orjson.loads(line)
    files = [InputFile(**row) for row in request["files"]]
    client = s3_client(request["region"], pool=request["concurrency"])
    fetched = fetch_in_order(client, request["bucket"], files, request["concurrency"], request["read_ahead_bytes"])
    index = 0
    try:
        for index, (_item, data) in enumerate(fetched):
            if isinstance(data, ObjectGone):
                _write(stdout, index, _GONE, data.reason.encode())
            else:
                _write(stdout, index, _BODY, data)
    except FetchError as exc:
        _write(stdout, index, _FAILED, str(exc).encode())
        return
    except (BrokenPipeError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - a fault of ours: the shard fails with it, and Batch retries
        _write(stdout, index, _FAILED, f"the S3 reader process failed: {exc!r}"[:2000].encode())
        return
    _write(stdout, len(files), _DONE, orjson.dumps({"peak_rss_mb": round(peak_rss_mb(), 1)}))


if __name__ == "__main__":
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer)
    except BrokenPipeError:
        os._exit(0)  # the shard stopped reading: nothing left to tell it
