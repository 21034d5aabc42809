"""deploy.sh and submit_array.sh driven with the real AWS CLI against a moto server: the stack through
moto's CloudFormation (Batch without docker), the dry run with no AWS at all."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import boto3
import pytest
from moto.cloudformation.parsing import get_model_map

from local_stack.sample_data import SampleSet, generate
from tests import stack
from tests.helpers import batch_client, run_script, seed, stack_resources

# what moto 5.2.5's CloudFormation cannot create (it skips them with a warning): tested elsewhere
# from the template (tests/test_stack_template.py, tests/test_aws_limits.py)
NOT_IN_MOTO = {"AWS::S3::BucketPolicy", "AWS::Scheduler::Schedule", "AWS::CloudWatch::Alarm"}


def _session(env: dict[str, str]) -> boto3.session.Session:
    return boto3.session.Session(region_name=env["AWS_REGION"])


def test_the_resource_types_moto_cannot_create_are_known():
    types = {r["Type"] for r in stack.load()["Resources"].values()}
    assert types - set(get_model_map()) == NOT_IN_MOTO


def test_deploy_creates_the_stack(batch_env):
    result = run_script("deploy.sh", batch_env, "--skip-images")
    assert result.returncode == 0, result.stderr
    physical = stack_resources(batch_env)
    prefix = batch_env["NAME_PREFIX"]
    definitions = batch_client(batch_env).describe_job_definitions(status="ACTIVE")["jobDefinitions"]
    mine = {d["jobDefinitionName"]: d for d in definitions if d["jobDefinitionName"].startswith(prefix)}
    assert set(mine) == {f"{prefix}-shard", f"{prefix}-reduce", batch_env["COORDINATOR_JOB_DEFINITION"]}
    coordinator = mine[batch_env["COORDINATOR_JOB_DEFINITION"]]["containerProperties"]
    assert coordinator["command"][:4] == ["python", "-m", "coordinator", "submit"]
    assert mine[batch_env["COORDINATOR_JOB_DEFINITION"]]["parameters"] == {
        "inputBucket": batch_env["S3_BUCKET"],
        "inputPrefix": "user-actions/",
        "outputTable": "user_behavior_vectors",
        "maxRecords": "0",
    }
    assert {e["name"]: e["value"] for e in coordinator["environment"]}["JOB_QUEUE"] == batch_env["JOB_QUEUE_ARN"]
    container = mine[f"{prefix}-shard"]["containerProperties"]
    assert container["image"] == f"123456789012.dkr.ecr.ap-northeast-2.amazonaws.com/{prefix}-shard:test"
    assert container["runtimePlatform"] == {"operatingSystemFamily": "LINUX", "cpuArchitecture": "X86_64"}
    assert {r["type"]: r["value"] for r in container["resourceRequirements"]} == {"VCPU": "2", "MEMORY": "4096"}
    environment = {e["name"]: e["value"] for e in container["environment"]}
    assert (environment["S3_BUCKET"], environment["WORK_BUCKET"]) == (batch_env["S3_BUCKET"], physical["WorkBucket"])
    assert container["logConfiguration"]["options"]["awslogs-group"] == f"/aws/batch/{prefix}"
    assert container["jobRoleArn"].endswith(f"/{physical['JobRole']}")
    # secrets come from Secrets Manager, never the environment; the shards get the read-only database role
    assert {x["name"]: x["valueFrom"] for x in container["secrets"]} == {
        "DATABASE_URL": batch_env["SHARD_DATABASE_URL_SECRET_ARN"],
        "WEBHOOK_SECRET": batch_env["WEBHOOK_SECRET_ARN"],
        "PARTIALS_SECRET": batch_env["PARTIALS_SECRET_ARN"],
    }
    [group] = (
        _session(batch_env).client("logs").describe_log_groups(logGroupNamePrefix=f"/aws/batch/{prefix}")["logGroups"]
    )
    assert group["retentionInDays"] == 90
    ecr = _session(batch_env).client("ecr")
    repositories = ecr.describe_repositories(repositoryNames=[f"{prefix}-shard", f"{prefix}-reduce"])["repositories"]
    assert {r["imageTagMutability"] for r in repositories} == {"IMMUTABLE"}
    encryption = _session(batch_env).client("s3").get_bucket_encryption(Bucket=physical["WorkBucket"])
    [rule] = encryption["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_the_deployed_roles_hold_the_policies_the_tests_render(batch_env):
    """moto's CloudFormation and tests/stack.render resolve the template alike: the IAM tests give
    their users exactly what the deployed roles hold."""
    assert run_script("deploy.sh", batch_env, "--skip-images").returncode == 0
    physical = stack_resources(batch_env)
    template = stack.load()
    rendered = stack.role_policies(template, stack.names(template, stack.parameters_from(batch_env), physical))
    iam = _session(batch_env).client("iam")
    for role, document in rendered.items():
        [policy] = iam.list_role_policies(RoleName=physical[role])["PolicyNames"]
        held = iam.get_role_policy(RoleName=physical[role], PolicyName=policy)["PolicyDocument"]
        # moto's CloudFormation stores an inline policy as Python's repr (botocore leaves it a string)
        # and keeps an AWS::NoValue list entry as null, which CloudFormation drops
        held = ast.literal_eval(held) if isinstance(held, str) else held
        held["Statement"] = [s for s in held["Statement"] if s is not None]
        assert held == document


def test_plan_prints_a_change_set_and_creates_nothing(batch_env):
    result = run_script("deploy.sh", batch_env, "--plan")
    assert result.returncode == 0, result.stderr
    listed = {line.split("|")[3].strip() for line in result.stdout.splitlines() if line.startswith("|  Add")}
    assert listed == set(stack.load()["Resources"])  # every resource, to be added
    assert "change set not executed" in result.stderr
    [described] = (
        _session(batch_env).client("cloudformation").describe_stacks(StackName=batch_env["NAME_PREFIX"])["Stacks"]
    )
    assert described["StackStatus"] == "REVIEW_IN_PROGRESS"
    names = {d["jobDefinitionName"] for d in batch_client(batch_env).describe_job_definitions()["jobDefinitions"]}
    assert f"{batch_env['NAME_PREFIX']}-shard" not in names


@pytest.mark.parametrize("missing", ["JOB_QUEUE_ARN", "PARTIALS_SECRET_ARN", "SHARD_DATABASE_URL_SECRET_ARN"])
def test_deploy_refuses_a_missing_setting(batch_env, missing):
    result = run_script("deploy.sh", {**batch_env, missing: ""}, "--dry-run")
    assert result.returncode == 2
    assert f"{missing} is required" in result.stderr


def _shims(tmp_path: Path, exit_code: int, *tools: str) -> Path:
    """Stand-ins for `tools` that write each command line to tmp_path/called and exit `exit_code`."""
    shims = tmp_path / "bin"
    shims.mkdir(exist_ok=True)
    for tool in tools:
        script = f'echo "{tool} $*" >> {tmp_path}/called\n[ "$1" != login ] || cat >/dev/null\nexit {exit_code}\n'
        (shims / tool).write_text(f"#!/bin/sh\n{script}")  # docker login reads the password from stdin
        (shims / tool).chmod(0o755)
    return shims


def test_deploy_builds_both_images_for_x86_64_and_pushes_them_to_the_stacks_repositories(batch_env, tmp_path):
    env = {**batch_env, "PATH": f"{_shims(tmp_path, 0, 'docker')}:{batch_env['PATH']}"}
    result = run_script("deploy.sh", env)
    assert result.returncode == 0, result.stderr
    called = (tmp_path / "called").read_text().splitlines()
    registry = "123456789012.dkr.ecr.ap-northeast-2.amazonaws.com"
    for kind in ("shard", "reduce"):
        image = f"{registry}/{batch_env['NAME_PREFIX']}-{kind}:test"
        assert (
            f"docker build --platform linux/amd64 -f {stack.REPO}/Dockerfile.{kind} -t {image} {stack.REPO}" in called
        )
        assert f"docker push {image}" in called
    definitions = batch_client(batch_env).describe_job_definitions(status="ACTIVE")["jobDefinitions"]
    assert f"{registry}/{batch_env['NAME_PREFIX']}-shard:test" in {
        d["containerProperties"]["image"] for d in definitions
    }


def _without_aws(env: dict[str, str], tmp_path: Path, dead_port: int) -> dict[str, str]:
    """No credentials anywhere, the endpoint a refused port, and `aws`/`docker` that say they ran."""
    shims = _shims(tmp_path, 1, "aws", "docker")
    kept = {k: v for k, v in {**os.environ, **env}.items() if not k.startswith("AWS_")}
    return {
        **kept,
        "PATH": f"{shims}:{env['PATH']}",
        "HOME": str(tmp_path),  # no ~/.aws
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{dead_port}",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }


def test_dry_run_lints_and_renders_without_aws(batch_env, tmp_path, dead_port):
    env = _without_aws(batch_env, tmp_path, dead_port)
    result = run_script("deploy.sh", {**env, "SUBMIT_TEST_JOB": "true"}, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "called").exists()  # neither aws nor docker ran
    shown = dict(line.strip().split("=", 1) for line in result.stdout.splitlines() if line.startswith("  "))
    assert shown["JobQueueArn"] == batch_env["JOB_QUEUE_ARN"]
    assert shown["PartialsSecretArn"] == batch_env["PARTIALS_SECRET_ARN"]
    assert shown["ImageTag"] == "test"
    assert set(shown) <= set(stack.load()["Parameters"])
    image = f"<account>.dkr.ecr.ap-northeast-2.amazonaws.com/{batch_env['NAME_PREFIX']}-shard:test"
    assert f"docker build --platform linux/amd64 -f {stack.REPO}/Dockerfile.shard -t {image}" in result.stdout


def test_dry_run_fails_on_a_template_cfn_lint_rejects(batch_env, tmp_path, dead_port):
    env = _without_aws(batch_env, tmp_path, dead_port)
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    (root / "deploy").mkdir()
    (root / "scripts" / "deploy.sh").write_text((stack.REPO / "scripts" / "deploy.sh").read_text())
    broken = stack.TEMPLATE.read_text().replace("Type: AWS::Batch::JobDefinition", "Type: AWS::Batch::JobDefinitio", 1)
    (root / "deploy" / "stack.yaml").write_text(broken)
    result = run_script(str(root / "scripts" / "deploy.sh"), env, "--dry-run")
    assert result.returncode == 2
    assert "cfn-lint found problems" in result.stderr


def test_deploy_sh_passes_every_template_parameter_and_requires_those_without_a_default():
    passed, template = stack.deploy_sh_parameters(), stack.load()["Parameters"]
    assert set(passed) == set(template)
    without_default = {passed[name] for name, p in template.items() if "Default" not in p}
    assert without_default - {"IMAGE_TAG"} == stack.deploy_sh_required()  # deploy.sh tags by the git commit


def _submitted(env, result):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_submit_array_submits_the_planned_size_and_a_dependent_reduce(batch_env):
    assert run_script("deploy.sh", batch_env, "--skip-images").returncode == 0
    seed(batch_env, generate(actions=600, users=50, places=20, batch_size=20, malformed_files=0))
    out = _submitted(batch_env, run_script("submit_array.sh", batch_env, "--", "--shards", "3"))
    assert out["shards"] == 3
    described = batch_client(batch_env).describe_jobs(jobs=[out["shard_job_id"], out["reduce_job_id"]])["jobs"]
    jobs = {j["jobId"]: j for j in described}
    shard, reduce = jobs[out["shard_job_id"]], jobs[out["reduce_job_id"]]
    assert shard["arrayProperties"]["size"] == 3
    assert {"name": "BATCH_ID", "value": out["batch_id"]} in shard["container"]["environment"]
    assert {"name": "BATCH_ID", "value": out["batch_id"]} in reduce["container"]["environment"]
    assert reduce["dependsOn"] == [{"jobId": out["shard_job_id"]}]


def test_one_shard_is_a_plain_job_and_zero_submits_nothing(batch_env):
    assert run_script("deploy.sh", batch_env, "--skip-images").returncode == 0
    sample = generate(actions=200, users=20, places=10, batch_size=50, malformed_files=0)
    seed(batch_env, SampleSet(sample.files[:2], sample.expected))
    out = _submitted(batch_env, run_script("submit_array.sh", batch_env, "--", "--shards", "1"))
    assert out["shards"] == 1
    [shard] = batch_client(batch_env).describe_jobs(jobs=[out["shard_job_id"]])["jobs"]
    assert "arrayProperties" not in shard or not shard["arrayProperties"].get("size")
    empty = {**batch_env, "S3_PREFIX": "nothing-here/", "BATCH_ID": ""}
    none = _submitted(empty, run_script("submit_array.sh", empty))
    assert none["shards"] == 0
    assert none["shard_job_id"] is None and none["reduce_job_id"] is None


def test_submit_dry_run_prints_the_calls_and_writes_nothing(batch_env):
    seed(batch_env, generate(actions=400, users=40, places=10, batch_size=20, malformed_files=0))
    out = _submitted(batch_env, run_script("submit_array.sh", batch_env, "--dry-run", "--", "--shards", "2"))
    shard, reduce = out["would_submit"]
    assert shard["arrayProperties"] == {"size": 2}
    assert shard["jobDefinition"] == f"{batch_env['NAME_PREFIX']}-shard"
    assert reduce["dependsOn"] == [{"jobId": "<shard job id>"}]
    assert {"name": "BATCH_ID", "value": out["batch_id"]} in reduce["containerOverrides"]["environment"]
    listed = _session(batch_env).client("s3").list_objects_v2(Bucket=batch_env["WORK_BUCKET"])
    assert listed.get("KeyCount", 0) == 0
    assert out["shards"] == 2
    mine = [{"name": "JOB_NAME", "values": [f"{batch_env['NAME_PREFIX']}*"]}]
    assert batch_client(batch_env).list_jobs(jobQueue=batch_env["JOB_QUEUE"], filters=mine)["jobSummaryList"] == []
