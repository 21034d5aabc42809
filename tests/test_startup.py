"""Jobs fail fast at start, since Batch runs no health check: a bad setting, model files that do not
match their manifest, AWS refusing the role or naming no such bucket, a database refusing the URL's
credentials stop a job in its first seconds with exit 2 (the retry strategy's EXIT); S3 or the
database out of reach is exit 1 (RETRY). Each case is timed."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from local_stack.postgres import LOCAL_PASSWORD
from tests.helpers import fresh_env, run_module
from witple_batch.model_files import TOKENIZER_FILE

JOBS = {"shard": ("shard_job",), "reduce": ("reduce_job",), "coordinator": ("coordinator", "submit")}
WITHIN_SECONDS = 15  # interpreter and imports included, on this 2-core machine


@pytest.fixture
def job_env(s3_env, model_dir, database_url) -> dict[str, str]:
    return fresh_env(
        s3_env,
        model_dir,
        DATABASE_URL=database_url,
        JOB_QUEUE="arn:aws:batch:ap-northeast-2:123456789012:job-queue/witple-fargate-queue",
        DB_CONNECT_ATTEMPTS="2",
    )


def _run(job: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    module, *args = JOBS[job]
    started = time.monotonic()
    result = run_module(module, env, *args, timeout=120)
    return result, time.monotonic() - started


@pytest.mark.parametrize("job", sorted(JOBS))
def test_a_work_bucket_that_does_not_exist_stops_the_job_at_once(job_env, job):
    result, seconds = _run(job, {**job_env, "WORK_BUCKET": "no-such-bucket-for-witple"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "s3://no-such-bucket-for-witple/batch-work/ refused this job: NoSuchBucket" in result.stderr
    assert seconds < WITHIN_SECONDS


@pytest.mark.parametrize("job", sorted(JOBS))
def test_a_database_refusing_the_urls_password_stops_the_job_without_retrying(job_env, job):
    wrong = job_env["DATABASE_URL"].replace(LOCAL_PASSWORD, "not-the-password")
    result, seconds = _run(job, {**job_env, "DATABASE_URL": wrong, "DB_CONNECT_ATTEMPTS": "5"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "refused" in result.stderr and "password authentication failed" in result.stderr
    assert "Retrying" not in result.stderr  # the first refusal is final
    assert "not-the-password" not in result.stderr
    assert seconds < WITHIN_SECONDS


@pytest.mark.parametrize("job", sorted(JOBS))
def test_an_aws_max_attempts_over_its_ceiling_stops_the_job_at_once_naming_it(job_env, job):
    """Read once at start with the other settings: the failure's own notice path, which makes an S3
    client too, then says why it sends nothing instead of raising out of the job (exit 1, a retry)."""
    result, seconds = _run(job, {**job_env, "BATCH_ID": "run-1", "AWS_MAX_ATTEMPTS": "25"})
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if '"level":"ERROR"' in line]
    assert len(errors) <= 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "configuration error: AWS_MAX_ATTEMPTS must be <= 20, got 25" in errors[0]
    assert seconds < WITHIN_SECONDS


@pytest.mark.parametrize("job", sorted(JOBS))
def test_s3_out_of_reach_is_retried(job_env, job, dead_port):
    result, seconds = _run(job, {**job_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{dead_port}"})
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Could not connect to the endpoint URL" in result.stderr
    assert seconds < WITHIN_SECONDS


@pytest.mark.parametrize("job", sorted(JOBS))
def test_a_database_out_of_reach_is_retried(job_env, job, dead_port):
    result, seconds = _run(job, {**job_env, "DATABASE_URL": f"postgresql://app:x@127.0.0.1:{dead_port}/witple"})
    assert result.returncode == 1, result.stderr[-2000:]
    assert "cannot connect to postgresql://app:***@127.0.0.1" in result.stderr and "after 2 attempts" in result.stderr
    assert seconds < WITHIN_SECONDS


def test_model_files_that_do_not_match_their_manifest_stop_the_shard_at_once(job_env, model_dir, tmp_path):
    changed = Path(shutil.copytree(model_dir, tmp_path / "model"))
    (changed / TOKENIZER_FILE).write_text((changed / TOKENIZER_FILE).read_text() + " ")
    result, seconds = _run("shard", {**job_env, "MODEL_DIR": str(changed)})
    assert result.returncode == 2, result.stderr[-2000:]
    assert TOKENIZER_FILE in result.stderr
    assert seconds < WITHIN_SECONDS
