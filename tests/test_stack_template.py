"""deploy/stack.yaml checked without AWS: cfn-lint (errors and warnings), parliament on every policy,
a "*" resource only for actions that have no resource type, the execution role able to read every
secret a job definition injects, the trust policies, the work bucket, the jobs' platform and
commands, and the failed-job rule against the jobs the batch actually runs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from moto.events.models import EventPattern

from tests import stack

KMS_KEY = f"arn:aws:kms:{stack.REGION}:{stack.ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ECS_TASKS_ROLES = ("JobRole", "CoordinatorRole", "ExecutionRole")
# parliament findings that are right to be there, each with why
ACCEPTED_FINDINGS = {
    # parliament matches against the revision-less job-definition format; SubmitJob is authorised
    # against the revision's ARN, so `name` alone never matches and `name:*` is the exact grant
    # (docs.aws.amazon.com/batch/latest/userguide/iam-example-restrict-job-submission.html,
    # "Accounting for job definition revisions")
    ("RESOURCE_MISMATCH", "batch:SubmitJob"),
    # pulling a private image needs the registry's token; the action has no resource type
    # (docs.aws.amazon.com/AmazonECS/latest/developerguide/task_execution_IAM_role.html)
    ("CREDENTIALS_EXPOSURE", "ecr:getauthorizationtoken"),
}


def _parliament() -> Any:
    """parliament 1.6.4 finds its two data files through pkg_resources, which setuptools >= 81 no
    longer ships: without it, a stand-in answering that one call."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        folder = Path(importlib.util.find_spec("parliament").origin).parent  # type: ignore[arg-type, union-attr]
        sys.modules["pkg_resources"] = SimpleNamespace(resource_filename=lambda _, name: str(folder / name))  # type: ignore[assignment]
    import parliament

    return parliament


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return stack.load()


@pytest.fixture(scope="module")
def names(template) -> stack.Names:
    """With a KMS key, so the conditional statement is linted too."""
    return stack.names(template, stack.sample_parameters(SecretsKmsKeyArn=KMS_KEY))


def test_cfn_lint_reports_no_error_and_no_warning():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), str(stack.TEMPLATE)], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def _findings(document: dict[str, Any]) -> set[tuple[str, str]]:
    policy = _parliament().analyze_policy_string(json.dumps(document), include_community_auditors=True)
    found = set()
    for finding in policy.findings:
        detail = finding.detail if isinstance(finding.detail, list) else [finding.location]
        actions = {d.get("action") or ",".join(d.get("actions", [])) for d in detail if isinstance(d, dict)}
        found |= {(finding.issue, action) for action in actions or {""}}
    return found


@pytest.mark.parametrize("role", ["JobRole", "CoordinatorRole", "ExecutionRole", "SchedulerRole"])
def test_parliament_finds_nothing_wrong_in_each_role_policy(template, names, role):
    assert _findings(stack.role_policies(template, names)[role]) <= ACCEPTED_FINDINGS


def test_parliament_finds_nothing_wrong_in_the_work_bucket_policy(template, names):
    [policy] = stack.rendered_resources(template, names, "AWS::S3::BucketPolicy").values()
    assert _findings(policy["PolicyDocument"]) == set()


def _resource_types() -> dict[str, list[str]]:
    """Every action's resource types, from the Service Authorization Reference's copy in parliament."""
    definition = _parliament().iam_definition
    return {
        f"{service['prefix']}:{p['privilege']}": [r["resource_type"] for r in p["resource_types"] if r["resource_type"]]
        for service in definition
        for p in service["privileges"]
    }


def test_a_star_resource_is_granted_only_for_actions_without_a_resource_type(template, names):
    types = _resource_types()
    starred = set()
    for document in stack.role_policies(template, names).values():
        for statement in document["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all("*" not in action for action in actions), statement
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            if "*" in resources:
                starred |= set(actions)
    assert starred == {"ecr:GetAuthorizationToken", "batch:ListJobs", "batch:DescribeJobs"}
    assert all(types[action] == [] for action in starred)


def test_the_execution_role_reads_every_secret_a_job_definition_injects(template, names):
    definitions = stack.rendered_resources(template, names, "AWS::Batch::JobDefinition")
    injected = {s["ValueFrom"] for d in definitions.values() for s in d["ContainerProperties"]["Secrets"]}
    statements = stack.role_policies(template, names)["ExecutionRole"]["Statement"]
    readable = {arn for s in statements if s["Action"] == "secretsmanager:GetSecretValue" for arn in s["Resource"]}
    assert injected == readable
    assert len(injected) == 4  # writer and reader database URLs, webhook and partials keys
    [decrypt] = [s for s in statements if s["Action"] == "kms:Decrypt"]
    assert decrypt["Resource"] == KMS_KEY
    without_key = stack.role_policies(template, stack.names(template, stack.sample_parameters()))["ExecutionRole"]
    assert "kms:Decrypt" not in json.dumps(without_key)


def _trust(template: dict[str, Any], names: stack.Names, role: str) -> dict[str, Any]:
    [statement] = stack.rendered_resources(template, names, "AWS::IAM::Role")[role]["AssumeRolePolicyDocument"][
        "Statement"
    ]
    return statement


@pytest.mark.parametrize(
    ("role", "service"),
    [*((role, "ecs-tasks.amazonaws.com") for role in ECS_TASKS_ROLES), ("SchedulerRole", "scheduler.amazonaws.com")],
)
def test_each_role_trusts_only_its_service_in_this_account(template, names, role, service):
    statement = _trust(template, names, role)
    assert (statement["Effect"], statement["Action"], statement["Principal"]) == (
        "Allow",
        "sts:AssumeRole",
        {"Service": service},
    )
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": stack.ACCOUNT}


def test_the_work_bucket_takes_writes_from_the_two_job_roles_only_and_tls_only(template, names):
    [bucket] = stack.rendered_resources(template, names, "AWS::S3::Bucket").values()
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    [expiry] = [r for r in bucket["LifecycleConfiguration"]["Rules"] if "ExpirationInDays" in r]
    assert expiry["Prefix"] == "batch-work/runs/" and expiry["Status"] == "Enabled"
    [policy] = stack.rendered_resources(template, names, "AWS::S3::BucketPolicy").values()
    tls, writers = policy["PolicyDocument"]["Statement"]
    work = names.attributes["WorkBucket.Arn"]
    assert (tls["Effect"], tls["Principal"], tls["Action"]) == ("Deny", "*", "s3:*")
    assert set(tls["Resource"]) == {work, f"{work}/*"}
    assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert (writers["Effect"], writers["Principal"]) == ("Deny", "*")
    assert set(writers["Action"]) == {"s3:PutObject", "s3:DeleteObject"}
    assert writers["Resource"] == f"{work}/batch-work/*"
    allowed = writers["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
    assert set(allowed) == {names.attributes["JobRole.Arn"], names.attributes["CoordinatorRole.Arn"]}


COMMANDS = {
    "ShardJobDefinition": ["python", "-m", "shard_job"],
    "ReduceJobDefinition": ["python", "-m", "reduce_job"],
    "CoordinatorJobDefinition": [
        *("python", "-m", "coordinator", "submit", "--input-bucket", "Ref::inputBucket", "--input-prefix"),
        *("Ref::inputPrefix", "--output-table", "Ref::outputTable", "--max-records", "Ref::maxRecords"),
    ],
}


@pytest.mark.parametrize("definition", sorted(COMMANDS))
def test_each_job_definition_runs_its_command_on_x86_64_fargate(template, names, definition):
    properties = stack.rendered_resources(template, names, "AWS::Batch::JobDefinition")[definition]
    container = properties["ContainerProperties"]
    assert properties["PlatformCapabilities"] == ["FARGATE"]
    assert container["RuntimePlatform"] == {"OperatingSystemFamily": "LINUX", "CpuArchitecture": "X86_64"}
    assert container["Command"] == COMMANDS[definition]
    environment = {e["Name"]: e["Value"] for e in container["Environment"]}
    # the jobs read their own attempts and timeout to tell a last attempt and a timeout (README)
    assert int(environment["JOB_ATTEMPTS"]) == properties["RetryStrategy"]["Attempts"]
    assert int(environment["JOB_TIMEOUT_SECONDS"]) == properties["Timeout"]["AttemptDurationSeconds"]


def _job_state_change(job_name: str, definition: str, queue: str) -> dict[str, Any]:
    """A FAILED event as Batch sends it (docs.aws.amazon.com/batch/latest/userguide/batch_job_events.html)."""
    return {
        "source": "aws.batch",
        "detail-type": "Batch Job State Change",
        "detail": {"jobName": job_name, "jobQueue": queue, "jobDefinition": f"{definition}:3", "status": "FAILED"},
    }


def test_the_failed_job_rule_matches_every_job_of_the_batch_whatever_its_name(template, names):
    [rule] = stack.rendered_resources(template, names, "AWS::Events::Rule").values()
    pattern = EventPattern.load(json.dumps(rule["EventPattern"]))
    queue = names.refs["JobQueueArn"]
    arn = f"arn:aws:batch:{stack.REGION}:{stack.ACCOUNT}:job-definition"
    ours = [
        ("witple-vectorization-1764230400", f"{arn}/witple-vectorization-job"),  # the main server's
        ("witple-batch-scheduled", f"{arn}/witple-vectorization-job"),  # the schedule's
        ("witple-batch-shard-run-4c7599ae", f"{arn}/witple-batch-shard"),
        ("witple-batch-reduce-run-4c7599ae", f"{arn}/witple-batch-reduce"),
    ]
    for job_name, definition in ours:
        assert pattern.matches_event(_job_state_change(job_name, definition, queue)), job_name
    others = [
        _job_state_change("witple-batch-other", f"{arn}/witple-batch-shard-other", queue),  # a longer name
        _job_state_change("witple-batch-shard-x", f"{arn}/witple-batch-shard", queue.replace("witple", "other")),
    ]
    assert not any(pattern.matches_event(event) for event in others)


def batch_action(entries: list[dict[str, str]], exit_code: int | None, reason: str, status_reason: str) -> str:
    """What Batch does with a failed attempt: the action of the first entry whose every condition
    matches, RETRY when none does; a pattern matches exactly or, ending in *, by its start
    (docs.aws.amazon.com/batch/latest/APIReference/API_EvaluateOnExit.html)."""

    def matches(pattern: str, value: str | None) -> bool:
        return value is not None and (value.startswith(pattern[:-1]) if pattern.endswith("*") else value == pattern)

    observed = {"OnExitCode": None if exit_code is None else str(exit_code), "OnReason": reason}
    observed["OnStatusReason"] = status_reason
    for entry in entries:
        if all(matches(entry[key], value) for key, value in observed.items() if key in entry):
            return entry["Action"].upper()
    return "RETRY"


@pytest.mark.parametrize(
    ("exit_code", "reason", "status_reason", "action"),
    [
        (2, "", "Essential container in task exited", "EXIT"),  # a bad setting, a refusal: permanent
        (1, "", "Essential container in task exited", "RETRY"),  # S3 or the database out of reach
        (137, "OutOfMemoryError: Container killed due to memory usage", "", "RETRY"),  # the retry quarantines
        (None, "ResourceInitializationError: unable to pull secrets", "Task failed to start", "RETRY"),
        (None, "CannotPullContainerError: pull image manifest has been retried", "Task failed to start", "RETRY"),
        (139, "", "Essential container in task exited", "EXIT"),  # a crash no retry fixes
    ],
)
@pytest.mark.parametrize("definition", sorted(COMMANDS))
def test_each_exit_is_retried_or_stopped_as_the_readme_says(
    template, names, definition, exit_code, reason, status_reason, action
):
    retry = stack.rendered_resources(template, names, "AWS::Batch::JobDefinition")[definition]["RetryStrategy"]
    assert batch_action(retry["EvaluateOnExit"], exit_code, reason, status_reason) == action
