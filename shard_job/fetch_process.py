"""The shard's GETs in a process of their own, so the read uses both of the child's vCPUs.

One Python process cannot: botocore spends ~1.3 ms of CPU on each GET and parsing ~12 us on
each record, all under one GIL, so a shard read one file per ~2.1 ms of CPU whatever the S3
latency (`benchmarks.e2e shard`). Here the GETs run in a child process (`fetch_in_order`,
its threads and read-ahead bound unchanged) that writes each result down a pipe, in plan
order, while the shard parses the one before.

Memory: the process holds the shard's file list (~0.5 KB a file, as the shard does) and
fetch_in_order's window (2x concurrency bodies, at most `read_ahead_bytes` listed bytes, or one
larger file alone) and the body it last sent; the pipe buffers 64 KiB (Linux) and the shard's
reader 8 KiB more. The process blocks on the pipe when the shard falls behind. The shard holds
the one body it is parsing.

The process lives no longer than the shard: it exits when its stdin closes (the shard is done,
or dead: killed, out of memory) and is killed when the shard stops reading early. A GET that
fails after boto3's retries, or the process dying, raises FetchError in the shard, as a GET
failing in the shard's own threads did.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson

from shard_job.fetch import FetchError, ObjectGone
from witple_batch.resources import peak_rss_mb
from witple_batch.run_layout import InputFile

log = logging.getLogger(__name__)

_FRAME = struct.Struct("<IBQ")  # file index (0 on a failure: it ends the read), kind, payload length
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
                    with contextlib.suppress(BrokenPipeError):  # a flush that failed before: already told
                        pipe.close()

    def stop(self) -> None:
        """The shard reads no further (it is full): the process ends now, its read-ahead freed;
        its peak so far is kept for the shard's metrics. One that has already sent everything
        has exited, and its peak is in its last frame, still in the pipe (at most its 64 KiB)."""
        self.peak_rss_mb = round(peak_rss_mb(self.pid), 1)
        if not self.peak_rss_mb:  # no memory of its own left: it is exiting, or has exited
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)
        if not self.peak_rss_mb and self._process.poll() is not None:
            stdout = self._process.stdout
            assert stdout is not None
            with contextlib.suppress(struct.error, ValueError, KeyError, TypeError):  # only a metric
                while header := stdout.read(_FRAME.size):
                    _index, kind, length = _FRAME.unpack(header)
                    payload = stdout.read(length)
                    if kind == _DONE:
                        self.peak_rss_mb = float(orjson.loads(payload)["peak_rss_mb"])
        self._process.kill()
        self._process.wait()

    def killed_first_on_oom(self) -> None:
        """Make the kernel's OOM killer pick this process (the shard) before the GET process.

        The two share the container's memory. Killed while parsing, the shard leaves its
        progress note on the file being parsed (a retry quarantines it), as when it read alone;
        the GET process killed instead would surface as a FetchError and blame no file, so
        every retry would die the same way. The highest score, not a margin: a score adds a
        share of the memory limit, and the GET process may briefly hold more than the shard.
        """
        try:
            own = Path("/proc/self/oom_score_adj")
            score = int(Path(f"/proc/{self.pid}/oom_score_adj").read_text())
            if int(own.read_text()) <= score < 1000:
                own.write_text("1000")
        except (OSError, ValueError):
            pass  # not Linux, or /proc not writable: the old behaviour, nothing worse

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
            stdin.write(orjson.dumps(request, option=orjson.OPT_APPEND_NEWLINE))
            stdin.flush()
        except BrokenPipeError:
            raise FetchError(self._stopped()) from None
        del request  # the process has its own copy
        for index, item in enumerate(files):
            before_wait(item)
            kind, payload = self._frame(stdout, index, (_BODY, _GONE))
            yield item, payload if kind == _BODY else ObjectGone(payload.decode())
        _kind, payload = self._frame(stdout, len(files), (_DONE,))
        self.peak_rss_mb = float(orjson.loads(payload)["peak_rss_mb"])

    def _frame(self, stdout: IO[bytes], index: int, kinds: tuple[int, ...]) -> tuple[int, bytes]:
        """The next frame, which must be file `index`'s and one of `kinds`; a failure frame raises."""
        header = stdout.read(_FRAME.size)
        if len(header) < _FRAME.size:
            raise FetchError(self._stopped())
        got, kind, length = _FRAME.unpack(header)
        payload = stdout.read(length)
        if len(payload) < length:
            raise FetchError(self._stopped())
        if kind == _FAILED:
            raise FetchError(payload.decode())
        if got != index or kind not in kinds:
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


def _exit_when_stdin_closes() -> None:
    # unbuffered reads of fd 0: a thread parked in the buffered reader would abort the
    # interpreter's shutdown (it cannot take the reader's lock to close it)
    while os.read(0, 1 << 16):
        pass  # nothing more is sent after the request: this ends when the shard closes the pipe or dies
    os._exit(0)


def _results(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    from shard_job.fetch import fetch_in_order
    from witple_batch.resources import peak_rss_mb
    from witple_batch.s3 import s3_client

    line = stdin.readline()
    if not line.endswith(b"\n"):
        return  # the shard went away mid-request
    threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
    request: dict[str, Any] = orjson.loads(line)
    del line
    files = [InputFile(**row) for row in request.pop("files")]
    client = s3_client(request["region"], pool=request["concurrency"])
    fetched = fetch_in_order(client, request["bucket"], files, request["concurrency"], request["read_ahead_bytes"])
    try:
        for index, (_item, data) in enumerate(fetched):
            if isinstance(data, ObjectGone):
                _write(stdout, index, _GONE, data.reason.encode())
            else:
                _write(stdout, index, _BODY, data)
    except FetchError as exc:
        _write(stdout, 0, _FAILED, str(exc).encode())
        return
    _write(stdout, len(files), _DONE, orjson.dumps({"peak_rss_mb": round(peak_rss_mb(), 1)}))


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> int:
    """The process's side: one request, every file's frame in order, then its peak memory.
    Any failure of its own goes to the shard as a frame and to the log as one JSON line."""
    from witple_batch.logs import configure, event, log_level

    configure("shard_job.fetch_process", log_level() or "INFO")
    try:
        _results(stdin, stdout)
    except BrokenPipeError:
        return 0  # the shard stopped reading: nothing left to tell it
    except BaseException as exc:  # noqa: BLE001 - a fault of ours (or Ctrl-C): the shard fails with it
        message = f"the S3 reader process failed: {exc!r}"[:2000]
        event(log, message, logging.ERROR)
        with contextlib.suppress(OSError):  # else the shard is gone; the log line stays
            _write(stdout, 0, _FAILED, message.encode())
        return 1
    return 0


if __name__ == "__main__":
    # frames get fd 1 to themselves (a library's print goes to stderr instead of into a frame),
    # buffered whatever PYTHONUNBUFFERED says (the images set it: a raw write may be partial);
    # os._exit: the stdin watcher is parked in a read, and nothing is left to clean up
    frames = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    os._exit(serve(sys.stdin.buffer, frames))
