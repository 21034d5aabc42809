"""The shard's GET process: the in-process fetcher's results, bounded, and never outliving or wedging the shard."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from local_stack.fault_proxy import FaultProxy
from local_stack.sample_data import ensure_bucket
from shard_job.fetch import FetchError, ObjectGone, fetch_in_order
from shard_job.fetch_process import FetchProcess
from witple_batch.run_layout import InputFile
from witple_batch.s3 import s3_client

BUCKET = "fetch-process-test"
SIZE = 2_000


def put_files(env: dict[str, str], count: int) -> list[InputFile]:
    client = s3_client(env["AWS_REGION"])
    ensure_bucket(client, BUCKET, env["AWS_REGION"])
    files = []
    for i in range(count):
        body = (f"{i:06d}".encode() * SIZE)[:SIZE]
        etag = client.put_object(Bucket=BUCKET, Key=f"in/{i:04d}", Body=body)["ETag"].strip('"')
        files.append(InputFile(key=f"in/{i:04d}", size=SIZE, etag=etag))
    return files


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat")
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False


def test_the_in_process_fetchers_results_in_plan_order(s3_env):
    files = put_files(s3_env, 40)
    client = s3_client(s3_env["AWS_REGION"])
    client.delete_object(Bucket=BUCKET, Key=files[7].key)
    client.put_object(Bucket=BUCKET, Key=files[9].key, Body=b"rewritten after planning")
    waited: list[InputFile] = []
    with FetchProcess.started({**os.environ, "PYTHONUNBUFFERED": "1"}) as reader:  # as the images run it
        got = list(reader.fetch_in_order(s3_env["AWS_REGION"], BUCKET, files, 4, 10_000, waited.append))
        assert reader.peak_rss_mb > 20  # sent at the end: the process's VmHWM
    assert waited == files == [item for item, _ in got]
    assert [data for _, data in got] == [data for _, data in fetch_in_order(client, BUCKET, files, 4, 10_000)]
    assert got[0][1] == (b"000000" * SIZE)[:SIZE]
    assert isinstance(got[7][1], ObjectGone) and "deleted after planning" in got[7][1].reason
    assert isinstance(got[9][1], ObjectGone) and "overwritten after planning" in got[9][1].reason


def test_a_get_that_fails_for_good_raises_fetch_error_naming_the_key(moto, s3_env):
    files = put_files(s3_env, 5)
    with FaultProxy.running(moto.endpoint, fail_keys=(files[3].key,)) as proxy:
        env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url, "AWS_MAX_ATTEMPTS": "2"}
        with FetchProcess.started(env) as reader:
            fetched = reader.fetch_in_order(s3_env["AWS_REGION"], BUCKET, files, 2, 10_000)
            assert [item for item, _ in itertools.islice(fetched, 3)] == files[:3]
            with pytest.raises(FetchError, match=f"s3://{BUCKET}/{files[3].key}: InternalError"):
                next(fetched)


def test_a_stalled_shard_stalls_the_gets(moto, s3_env):
    """The process may run ahead of the shard by its window and the pipe's buffer, never further."""
    files = put_files(s3_env, 300)
    gets: list[str] = []
    counting = FaultProxy.running(moto.endpoint, hang_when=lambda method, path: gets.append(path) and False)
    with counting as proxy, FetchProcess.started({**os.environ, "AWS_ENDPOINT_URL": proxy.url}) as reader:
        fetched = reader.fetch_in_order(s3_env["AWS_REGION"], BUCKET, files, 4, 5 * SIZE)
        next(fetched)
        time.sleep(1.5)  # unbounded, all 300 would be fetched by now (~0.3 s)
        ahead = len(gets)
        assert sum(1 for _ in fetched) == 299
    # window: 5 files (read_ahead_bytes) and the one last sent; pipe: 64 KiB of 2 KB frames;
    # the shard's reader: 8 KiB; one being written
    assert ahead <= 1 + 6 + 33 + 4 + 1, ahead
    assert len(gets) == 300


def test_the_process_dying_fails_the_read_clearly(s3_env):
    files = put_files(s3_env, 200)
    with FetchProcess.started() as reader:
        fetched = reader.fetch_in_order(s3_env["AWS_REGION"], BUCKET, files, 2, 4 * SIZE)
        next(fetched)
        os.kill(reader.pid, signal.SIGKILL)
        with pytest.raises(FetchError, match=r"S3 reader process stopped .* \(exit code -9\)"):
            for _ in fetched:
                pass


SHARD = """
import sys, time
from shard_job.fetch_process import FetchProcess
from witple_batch.run_layout import InputFile
files = [InputFile(key=f"in/{i:04d}", size=2000, etag="x") for i in range(300)]
with FetchProcess.started() as reader:
    print(reader.pid, flush=True)
    next(reader.fetch_in_order(sys.argv[1], sys.argv[2], files, 2, 8000))
"""


@pytest.mark.parametrize("stop", ["killed", "stops reading"])
def test_the_process_never_outlives_the_shard(moto, s3_env, stop):
    """Even when its GETs hang: the process ends when the shard does, not when S3 answers."""
    put_files(s3_env, 1)
    with FaultProxy.running(moto.endpoint, hang_when=lambda method, path: method == "GET") as proxy:
        env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url}
        if stop == "killed":
            shard = subprocess.Popen(
                [sys.executable, "-c", SHARD, s3_env["AWS_REGION"], BUCKET], stdout=subprocess.PIPE, text=True, env=env
            )
            assert shard.stdout is not None
            helper = int(shard.stdout.readline())
            assert proxy.hung.wait(10)
            shard.kill()  # SIGKILL: no finally runs; the process sees its stdin close
            shard.wait()
        else:
            with FetchProcess.started(env) as reader:
                helper = reader.pid
                hanging = [InputFile("in/0000", SIZE, "x")]
                fetched = reader.fetch_in_order(s3_env["AWS_REGION"], BUCKET, hanging, 2, 8000)
                with pytest.raises(TimeoutError), alarm_after(1):
                    next(fetched)  # the shard gives up waiting (as a Spot SIGTERM would make it)
        assert wait_gone(helper, 10)
        proxy.release.set()


@contextmanager
def alarm_after(seconds: int) -> Iterator[None]:
    def give_up(*_args: object) -> None:
        raise TimeoutError

    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


def run_helper(request: bytes) -> tuple[int, bytes, bytes]:
    """The process on its own, its stdin held open (closing it is the shard going away)."""
    helper = subprocess.Popen(
        [sys.executable, "-m", "shard_job.fetch_process"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert helper.stdin is not None and helper.stdout is not None and helper.stderr is not None
    helper.stdin.write(request)
    helper.stdin.flush()
    with alarm_after(60):  # a regression fails here instead of hanging the suite
        out, err = helper.stdout.read(), helper.stderr.read()  # to EOF: the process ends by itself
    code = helper.wait(timeout=30)
    helper.stdin.close()
    return code, out, err


def test_the_process_exits_cleanly_and_logs_only_json(s3_env):
    files = put_files(s3_env, 3)
    request = {"region": s3_env["AWS_REGION"], "bucket": BUCKET, "files": [f.as_dict() for f in files]}
    code, out, err = run_helper(orjson.dumps(request | {"concurrency": 2, "read_ahead_bytes": 8000}) + b"\n")
    assert (code, err) == (0, b"")
    assert out.count(SIZE.to_bytes(8, "little")) == 3  # three body frames, then the closing one
    assert b'"peak_rss_mb"' in out
    code, out, err = run_helper(b'{"not": "a request"}\n')
    assert code == 1
    assert b"the S3 reader process failed: KeyError('files')" in out
    assert [orjson.loads(line)["level"] for line in err.splitlines()] == ["ERROR"]


OOM_SCORES = """
from pathlib import Path
from shard_job.fetch_process import FetchProcess
with FetchProcess.started() as reader:
    reader.killed_first_on_oom()
    print(Path("/proc/self/oom_score_adj").read_text().strip(), Path(f"/proc/{reader.pid}/oom_score_adj").read_text())
"""


def test_the_oom_killer_picks_the_shard_first():
    """Killed while parsing, the shard leaves its note on the file being parsed, as when it read alone
    (shard_job's child asks for it as soon as the GET process starts)."""
    shard, helper = map(int, subprocess.check_output([sys.executable, "-c", OOM_SCORES], text=True).split())
    assert shard > helper
