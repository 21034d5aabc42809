"""The template's roles cover every call the jobs make, proved by running the jobs on them.

Each role's policy, rendered from deploy/stack.yaml with the deployed stack's names, is held by one
IAM user on the moto server with IAM enforced (local_stack/moto_iam.py: every resource ARN an
action needs is checked, s3:prefix evaluated). deploy.sh deploys and submits its test run as an
administrator; the coordinator, the shard, the reduce and both checks run with their role's keys,
Fargate's part (image pull, secrets, logs) with the execution role's, the schedule's SubmitJob with
the scheduler role's. Every AWS call is recorded (tests/aws_call_log.py): an action a role holds
that no job calls fails the test unless KEPT says why it stays. Taking one grant away makes the
job that needs it fail with AccessDenied.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.events.models import EventPattern

from local_stack import moto_iam
from local_stack.sample_data import generate
from tests import aws_call_log, stack
from tests.helpers import REPO, batch_client, query, run_as_batch, run_module, run_script, seed, stack_resources

ADMIN = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
# grants no job of this suite calls, and why each stays
KEPT = {
    ("CoordinatorRole", "s3:DeleteObject"): "replaces a plan object orphaned by a planner that died before its commit",
    ("ExecutionRole", "ecr:GetDownloadUrlForLayer"): "Fargate pulls each layer; moto's repositories hold no image",
    ("ExecutionRole", "ecr:BatchCheckLayerAvailability"): "as above: layers are checked before they are pulled",
}
Policy = dict[str, Any]


def _keys(iam: Any, name: str, document: Policy) -> dict[str, str]:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="role", PolicyDocument=json.dumps(document))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


@dataclass(frozen=True)
class Roles:
    """One IAM user per role of the deployed stack, holding exactly the role's policy."""

    keys: dict[str, dict[str, str]]  # logical id -> access keys
    arns: dict[str, str]  # logical id -> the role's ARN in the stack

    @property
    def by_arn(self) -> dict[str, dict[str, str]]:
        return {self.arns[role]: keys for role, keys in self.keys.items()}

    def role_of(self, access_key: str) -> str | None:
        return next((role for role, keys in self.keys.items() if keys["AWS_ACCESS_KEY_ID"] == access_key), None)


def role_users(env: dict[str, str], change: Callable[[str, Policy], Policy] = lambda _, policy: policy) -> Roles:
    """Users for the deployed stack's roles; `change(role, policy)` may take a grant away."""
    template, physical = stack.load(), stack_resources(env)
    names = stack.names(template, stack.parameters_from(env), physical)
    iam = boto3.session.Session(region_name=env["AWS_REGION"]).client("iam")
    tag = uuid.uuid4().hex[:6]
    keys = {
        role: _keys(iam, f"{physical[role]}-{tag}", change(role, document))
        for role, document in stack.role_policies(template, names).items()
    }
    return Roles(keys, {role: names.attributes[f"{role}.Arn"] for role in keys})


@pytest.fixture
def enforced(batch_env, receiver, moto, tmp_path, monkeypatch) -> Iterator[tuple[dict[str, str], Path]]:
    """batch_env signed by an administrator, IAM enforced on the moto server, every AWS call of this
    process and its children recorded; the jobs' webhook is the local receiver."""
    iam = boto3.session.Session(region_name=batch_env["AWS_REGION"]).client("iam")
    admin = _keys(iam, f"admin-{uuid.uuid4().hex[:6]}", ADMIN)
    for name, value in admin.items():
        monkeypatch.setenv(name, value)
    calls = tmp_path / "calls.jsonl"
    env = {**batch_env, **admin, **aws_call_log.environment(calls, REPO), "WEBHOOK_URL": receiver.url}
    with aws_call_log.recording(calls), moto_iam.enforced(moto.endpoint):
        yield env, calls


def _ok(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout) if result.stdout.startswith("{") else {}


def _wait_for_job(env: dict[str, str], name: str, process: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        wanted = [{"name": "JOB_NAME", "values": [name]}]
        listed = batch_client(env).list_jobs(jobQueue=env["JOB_QUEUE"], filters=wanted)
        if listed["jobSummaryList"]:
            return str(listed["jobSummaryList"][0]["jobId"])
        time.sleep(0.5)
    pytest.fail(f"deploy.sh submitted no {name}: {process.communicate()[1][-2000:]}")


def _check_job(env: dict[str, str], definition: str, module: str) -> str:
    """`check` as an operator runs it on AWS: a job of the definition, its command overridden."""
    return batch_client(env).submit_job(
        jobName=f"{env['NAME_PREFIX']}-check",
        jobQueue=env["JOB_QUEUE"],
        jobDefinition=definition,
        containerOverrides={"command": ["python", "-m", module, "check"]},
    )["jobId"]


def _scheduler(env: dict[str, str], roles: Roles) -> Any:
    keys = roles.keys["SchedulerRole"]
    return boto3.session.Session(
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    ).client("batch")


def _schedule_input(env: dict[str, str]) -> dict[str, str]:
    """The schedule's SubmitJob request as the deployed stack renders it (its Input names
    SubmitJob's members as JobName; botocore's are jobName)."""
    template = stack.load()
    names = stack.names(template, stack.parameters_from(env), stack_resources(env))
    [schedule] = stack.rendered_resources(template, names, "AWS::Scheduler::Schedule").values()
    return {key[0].lower() + key[1:]: value for key, value in json.loads(schedule["Target"]["Input"]).items()}


def _state_change(job: dict[str, Any]) -> dict[str, Any]:
    """A FAILED event for `job` as Batch sends it: its detail is the job as DescribeJobs shows it
    (docs.aws.amazon.com/batch/latest/userguide/batch_job_events.html)."""
    return {"source": "aws.batch", "detail-type": "Batch Job State Change", "detail": {**job, "status": "FAILED"}}


def test_every_job_runs_on_its_roles_policy_and_every_grant_is_used(enforced):
    env, calls = enforced
    deploy = subprocess.Popen(
        ["bash", str(REPO / "scripts" / "deploy.sh"), "--skip-images"],
        env={**os.environ, **env, "SUBMIT_TEST_JOB": "true", "TEST_JOB_POLL_SECONDS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        coordinator = _wait_for_job(env, f"{env['NAME_PREFIX']}-deploy-test-*", deploy)
        roles = role_users(env)
        job_env = {k: v for k, v in env.items() if k != "BATCH_ID"}
        run = _ok(run_as_batch(job_env, coordinator, roles.by_arn))
        assert run["files"] == 1 and run["shards"] == 1  # the one tiny file deploy.sh uploaded
        assert _ok(run_as_batch(job_env, coordinator, roles.by_arn))["submitted"] == []  # Batch retrying it
        _ok(run_as_batch(job_env, run["shard_job_id"], roles.by_arn))
        _ok(run_as_batch(job_env, run["reduce_job_id"], roles.by_arn))
        _, stderr = deploy.communicate(timeout=120)
    finally:
        deploy.kill()
    assert deploy.returncode == 0, stderr
    for kind, job in (("coordinator", coordinator), ("shard", run["shard_job_id"]), ("reduce", run["reduce_job_id"])):
        assert f"test run: {kind} {job} SUCCEEDED" in stderr
    physical = stack_resources(env)
    for definition, module in (("ShardJobDefinition", "shard_job"), ("ReduceJobDefinition", "reduce_job")):
        checked = run_as_batch(job_env, _check_job(env, physical[definition], module), roles.by_arn)
        assert checked.returncode == 0 and "FAIL" not in checked.stdout, checked.stdout + checked.stderr

    scheduled = _scheduler(env, roles).submit_job(**_schedule_input(env))
    main_server = batch_client(env).submit_job(  # MAIN_SERVER.md: its own role, not ours
        jobName="witple-vectorization-1764230400",
        jobQueue=env["JOB_QUEUE"],
        jobDefinition=env["COORDINATOR_JOB_DEFINITION"],
        parameters={"inputBucket": env["S3_BUCKET"], "inputPrefix": "user-actions/", "maxRecords": "10"},
    )
    jobs = [coordinator, run["shard_job_id"], run["reduce_job_id"], scheduled["jobId"], main_server["jobId"]]
    rule = (
        boto3.session.Session(region_name=env["AWS_REGION"])
        .client("events")
        .describe_rule(Name=physical["FailedJobRule"])
    )
    pattern = EventPattern.load(rule["EventPattern"])
    for job in batch_client(env).describe_jobs(jobs=jobs)["jobs"]:
        assert pattern.matches_event(_state_change(job)), job["jobName"]

    _assert_every_grant_is_called(env, roles, calls)


def _assert_every_grant_is_called(env: dict[str, str], roles: Roles, calls: Path) -> None:
    called: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for call in aws_call_log.read(calls):
        if (role := roles.role_of(call.key)) is not None:
            called[role][call.action].add(f"{call.operation} ({call.program})")
    template = stack.load()
    policies = stack.role_policies(template, stack.names(template, stack.parameters_from(env), stack_resources(env)))
    for role, document in policies.items():
        granted = set()
        for statement in document["Statement"]:
            granted |= set(statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]])
        assert set(called[role]) <= granted, role  # moto would have refused it otherwise
        unused = {action for action in granted - set(called[role]) if (role, action) not in KEPT}
        assert not unused, f"{role} holds {sorted(unused)}, which no job called"
        for action in sorted(granted):  # with -s: what each grant is for
            print(f"{role:16} {action:32} {', '.join(sorted(called[role][action])) or KEPT[(role, action)]}")


@dataclass(frozen=True)
class Removal:
    role: str
    action: str
    resource: str | None = None  # only this resource of the statement; None: the whole action


def _without(removal: Removal) -> Callable[[str, Policy], Policy]:
    def change(role: str, policy: Policy) -> Policy:
        if role != removal.role:
            return policy
        statements = []
        for statement in policy["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if removal.resource is None:
                actions = [a for a in actions if a != removal.action]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            if removal.resource is not None and removal.action in actions:
                resources = [r for r in resources if removal.resource not in r]
            if actions and resources:
                statements.append({**statement, "Action": actions, "Resource": resources})
        return {**policy, "Statement": statements}

    return change


@pytest.fixture
def deployed(enforced) -> dict[str, str]:
    """The stack deployed, some input, the database migrated (as the first reduce would)."""
    env, _ = enforced
    assert run_script("deploy.sh", env, "--skip-images").returncode == 0
    seed(env, generate(actions=60, users=6, places=4, batch_size=20, malformed_files=0))
    assert run_module("reduce_job", env, "migrate").returncode == 0
    return {k: v for k, v in env.items() if k != "BATCH_ID"}


def _said(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}: {result.stdout}{result.stderr}"


def _coordinator(env: dict[str, str], roles: Roles) -> str:
    """Submitted as the main server does, then run twice: Batch retrying it, it finds its jobs."""
    job = batch_client(env).submit_job(
        jobName="witple-vectorization-1", jobQueue=env["JOB_QUEUE"], jobDefinition=env["COORDINATOR_JOB_DEFINITION"]
    )["jobId"]
    first = run_as_batch(env, job, roles.by_arn)
    return _said(first if first.returncode else run_as_batch(env, job, roles.by_arn))


def _shard_check(env: dict[str, str], roles: Roles) -> str:
    job = _check_job(env, stack_resources(env)["ShardJobDefinition"], "shard_job")
    return _said(run_as_batch(env, job, roles.by_arn))


def _scheduled_submit(env: dict[str, str], roles: Roles) -> str:
    _scheduler(env, roles).submit_job(**_schedule_input(env))
    return "exit 0: submitted"


def _refusal(run: Callable[[dict[str, str], Roles], str], env: dict[str, str], roles: Roles) -> str:
    """What `run` said, or the AWS error it raised in this process (Fargate's part, the schedule's call)."""
    try:
        return run(env, roles)
    except ClientError as exc:
        return f"raised {exc.response['Error']['Code']}: {exc}"


CASES = [
    # the coordinator finds the jobs it submitted before submitting them again (submit.find_job)
    (Removal("CoordinatorRole", "batch:DescribeJobs"), _coordinator, "exit 2", "perform: batch:DescribeJobs"),
    (Removal("CoordinatorRole", "batch:SubmitJob", "job-definition/"), _coordinator, "exit 2", "job-definition/"),
    # check writes, reads and deletes a probe under the work prefix
    (Removal("JobRole", "s3:DeleteObject"), _shard_check, "exit 2", "FAIL s3 work: cannot write and read"),
    # Fargate reads every secret before the container starts (ResourceInitializationError on AWS)
    (Removal("ExecutionRole", "secretsmanager:GetSecretValue", "secret:partials"), _coordinator, "raised", "partials"),
    # SubmitJob needs the job resource type too (Service Authorization Reference)
    (Removal("SchedulerRole", "batch:SubmitJob", ":job/"), _scheduled_submit, "raised", ":job/"),
]
IDS = ["coordinator-DescribeJobs", "coordinator-definitions", "job-DeleteObject", "execution-secret", "schedule"]


@pytest.mark.parametrize("run", sorted({case[1] for case in CASES}, key=lambda f: f.__name__))
def test_with_every_grant_these_runs_succeed(deployed, run):
    assert _refusal(run, deployed, role_users(deployed)).startswith("exit 0"), "the grants below take one away"


@pytest.mark.parametrize(("removal", "run", "outcome", "named"), CASES, ids=IDS)
def test_a_grant_taken_away_is_an_access_denied_failure(deployed, removal, run, outcome, named):
    said = _refusal(run, deployed, role_users(deployed, _without(removal)))
    assert said.startswith(outcome), said[-2000:]
    assert "AccessDenied" in said and named in said, said[-2000:]


def test_moto_checks_the_prefix_a_listing_names_and_the_definition_a_submit_names(deployed):
    """The adapter's own proof: grants scoped by s3:prefix and by job definition are enforced."""
    roles = role_users(deployed)

    def client(role: str, service: str) -> Any:
        keys = roles.keys[role]
        return boto3.session.Session(
            aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
            region_name=deployed["AWS_REGION"],
        ).client(service)

    s3 = client("CoordinatorRole", "s3")  # the job role may list the whole bucket: a GET's miss needs it
    s3.list_objects_v2(Bucket=deployed["S3_BUCKET"], Prefix="user-actions/year=2025/")
    for outside in ({"Prefix": "elsewhere/"}, {}):  # another prefix; none at all (the key is absent)
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.list_objects_v2(Bucket=deployed["S3_BUCKET"], **outside)
    batch = client("CoordinatorRole", "batch")
    request = {"jobName": "n", "jobQueue": deployed["JOB_QUEUE"]}
    batch.submit_job(**request, jobDefinition=f"{deployed['NAME_PREFIX']}-reduce")
    with pytest.raises(ClientError, match=r"AccessDeniedException.*job-definition/"):
        batch.submit_job(**request, jobDefinition=deployed["COORDINATOR_JOB_DEFINITION"])  # not its to start


def test_a_retried_child_and_a_vanished_input_file_are_misses_not_access_denied(deployed):
    """S3 answers a GET of a missing key NoSuchKey only to a caller who may list the bucket, a grant a
    GET's missing s3:prefix cannot meet (moto_iam models both): a retried child's first GET (its
    progress note, never written) and an input file deleted after planning are misses on the job
    role's grants, the file left to the next plan, never an AccessDenied that fails the run."""
    roles = role_users(deployed)
    job = batch_client(deployed).submit_job(
        jobName="witple-vectorization-2",
        jobQueue=deployed["JOB_QUEUE"],
        jobDefinition=deployed["COORDINATOR_JOB_DEFINITION"],
    )["jobId"]
    run = _ok(run_as_batch(deployed, job, roles.by_arn))
    s3 = boto3.session.Session(region_name=deployed["AWS_REGION"]).client("s3")  # the administrator's
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=deployed["S3_BUCKET"])["Contents"])
    s3.delete_object(Bucket=deployed["S3_BUCKET"], Key=keys[0])
    retried = {**deployed, "AWS_BATCH_JOB_ATTEMPT": "2"}
    for index in range(run["shards"]):
        _ok(run_as_batch(retried, run["shard_job_id"], roles.by_arn, index if run["shards"] > 1 else None))
    _ok(run_as_batch(deployed, run["reduce_job_id"], roles.by_arn))
    assert sorted(key for (key,) in query(deployed["DATABASE_URL"], "SELECT key FROM processed_files")) == keys[1:]
