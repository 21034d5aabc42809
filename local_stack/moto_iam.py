"""Test-only: moto's IAM check made the way AWS makes it for the calls these jobs make.

With authentication on (`enforced`), moto checks each request's caller against its IAM policies,
but: S3 calls against bucket and object ARNs and every other service against "*" only; Batch's
actions named in lower case (`batch:submitjob`, which no `batch:SubmitJob` grant matches); no
condition of an identity policy; and an Allow whose condition fails as a Deny. Installed in the
process that serves moto (local_stack.moto_s3 runs it in the test process), this:

* names the action as IAM does (batch:SubmitJob);
* checks every resource the Service Authorization Reference requires for it: SubmitJob's job
  queue, job definition (a name resolved to its revision's ARN) and the new job; a secret's ARN;
  a log stream's ARN; a repository's ARN; "*" where the action has no resource type;
* evaluates StringEquals and StringLike on `s3:prefix` (an absent key matches nothing, as in AWS),
  an Allow whose condition fails granting nothing rather than denying;
* answers an s3:GetObject of a key the bucket does not hold 403 AccessDenied unless the caller may
  s3:ListBucket the bucket, judged on the GET itself (no s3:prefix), as S3 does
  (docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html, Permissions);
* refuses a JSON-protocol service's call as AWS does, `AccessDeniedException` in a JSON body
  naming the resource (moto answers every service in S3's XML, which botocore reads as code 403).

Still not enforced: every other condition key (aws:SecureTransport, aws:PrincipalArn,
aws:SourceAccount, kms:ViaService), resource-based policies (the work bucket's: moto's
CloudFormation does not create it), trust policies (an IAM user with the role's policy stands in
for the role), SCPs and permission boundaries.
"""

from __future__ import annotations

import fnmatch
import json
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

ENFORCED_CONDITION_KEYS = frozenset({"s3:prefix"})


def _string_like(actual: str, pattern: str) -> bool:
    # IAM's wildcards are * and ?, nothing else (fnmatch's [...] escaped)
    return fnmatch.fnmatchcase(actual, pattern.replace("[", "[[]"))


_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": str.__eq__,
    "StringLike": _string_like,
}


@cache
def _model(service: str) -> tuple[dict[str, str], str]:
    """The service's operation names by their lower case, and its protocol ("" if botocore has no model)."""
    import botocore.session
    from botocore.exceptions import UnknownServiceError

    try:
        model = botocore.session.get_session().get_service_model(service)
    except UnknownServiceError:
        return {}, ""
    return {name.lower(): name for name in model.operation_names}, model.protocol


def iam_action(service: str, action: str) -> str:
    """`batch:submitjob` -> `batch:SubmitJob` (IAM matches actions without case; moto with it)."""
    return f"{service}:{_model(service)[0].get(action.lower(), action)}"


def _refuse(request: Any, resource: str) -> None:
    from moto.core.exceptions import JsonRESTError

    if _model(request._service)[1] not in ("json", "rest-json"):
        request._raise_access_denied()
    error = JsonRESTError(
        "AccessDeniedException",
        f"User: {request._access_key.arn} is not authorized to perform: {request._action} on resource: {resource}",
    )
    error.code = 403
    raise error


def _arn(request: Any, service: str, resource: str) -> str:
    from moto.utilities.utils import get_partition

    return f"arn:{get_partition(request._region)}:{service}:{request._region}:{request.account_id}:{resource}"


def _batch_resources(request: Any, body: dict[str, Any]) -> list[str]:
    from moto.batch.models import batch_backends

    backend = batch_backends[request.account_id][request._region]
    queue, definition = body["jobQueue"], body["jobDefinition"]
    found_queue, found_definition = backend.get_job_queue(queue), backend.get_job_definition(definition)
    return [
        found_queue.arn if found_queue else _arn(request, "batch", f"job-queue/{queue}"),
        found_definition.arn if found_definition else _arn(request, "batch", f"job-definition/{definition}"),
        _arn(request, "batch", f"job/{uuid.uuid4()}"),  # the job it creates: only a job/* grant covers it
    ]


def _secret_resources(request: Any, body: dict[str, Any]) -> list[str]:
    from moto.secretsmanager.models import secretsmanager_backends

    secrets = secretsmanager_backends[request.account_id][request._region].secrets
    secret_id = body["SecretId"]
    return [secrets[secret_id].arn if secret_id in secrets else secret_id]


def resources(request: Any) -> list[str] | None:
    """Every resource ARN the call is authorised against; None: moto's own (S3's, or "*")."""
    service, action = request._action.split(":", 1)
    try:
        body = json.loads(request._body or b"{}")
    except ValueError:
        body = {}
    if service == "batch" and action == "SubmitJob":
        return _batch_resources(request, body)
    if service == "secretsmanager" and action == "GetSecretValue":
        return _secret_resources(request, body)
    if service == "logs" and action in ("CreateLogStream", "PutLogEvents"):
        return [_arn(request, "logs", f"log-group:{body['logGroupName']}:log-stream:{body['logStreamName']}")]
    if service == "ecr" and action in ("BatchGetImage", "GetDownloadUrlForLayer", "BatchCheckLayerAvailability"):
        return [_arn(request, "ecr", f"repository/{body['repositoryName']}")]
    return None


def _condition_context(request: Any) -> dict[str, str]:
    data = request._data if isinstance(request._data, dict) else {}
    prefix = data.get("prefix") if request._action == "s3:ListBucket" else None
    return {"s3:prefix": prefix[0] if isinstance(prefix, list) else prefix} if prefix is not None else {}


def _conditions_hold(statement: dict[str, Any], context: dict[str, str]) -> bool:
    """The statement's conditions on the keys enforced here; other keys are not evaluated."""
    for operator, keys in (statement.get("Condition") or {}).items():
        test = _OPERATORS.get(operator)
        for key, expected in keys.items():
            if test is None or key not in ENFORCED_CONDITION_KEYS:
                continue
            actual = context.get(key)
            patterns = expected if isinstance(expected, list) else [expected]
            if actual is None or not any(test(actual, pattern) for pattern in patterns):
                return False
    return True


def _applies(statement: dict[str, Any], action: str, resource: str, context: dict[str, str]) -> bool:
    """Action, resource and conditions all match (a statement whose condition fails is silent, not a deny)."""
    from moto.iam.access_control import IAMPolicyStatement

    matcher = IAMPolicyStatement(statement)
    if "NotAction" in statement:
        if matcher._check_element_matches("NotAction", action):
            return False
    elif not matcher._check_element_matches("Action", action):
        return False
    return matcher._check_element_matches("Resource", resource) and _conditions_hold(statement, context)


def _allowed(statements: list[dict[str, Any]], action: str, resource: str, context: dict[str, str]) -> bool:
    """An Allow applies and no Deny does."""
    effects = {s["Effect"] for s in statements if _applies(s, action, resource, context)}
    return "Allow" in effects and "Deny" not in effects


def _missing_object(request: Any, resource: str) -> bool:
    """Whether the object ARN names a key its bucket does not hold (a missing bucket is moto's to answer)."""
    from moto.s3.exceptions import MissingBucket
    from moto.s3.models import s3_backends
    from moto.utilities.utils import get_partition

    bucket, _, key = resource.split(":::", 1)[1].partition("/")
    try:
        return s3_backends[request.account_id][get_partition(request._region)].get_object(bucket, key) is None
    except MissingBucket:
        return False


def _check_action_permitted(request: Any, resource: str) -> None:
    from moto.iam.access_control import IAMPolicy

    service, action = request._action.split(":", 1)
    request._action = iam_action(service, action)
    if request._action == "sts:GetCallerIdentity":  # always allowed, as in AWS
        return
    context = _condition_context(request)
    statements = []
    for policy in request._access_key.collect_policies():
        document = IAMPolicy(policy)._policy_json
        listed = document["Statement"]
        statements += listed if isinstance(listed, list) else [listed]
    for arn in resources(request) or [resource]:
        if not _allowed(statements, request._action, arn, context):
            _refuse(request, arn)
    missing = request._action == "s3:GetObject" and _missing_object(request, resource)
    # S3 says NoSuchKey only to a caller who could have listed the bucket and seen the key is absent
    if missing and not _allowed(statements, "s3:ListBucket", resource.split("/", 1)[0], context):
        _refuse(request, resource)


def install() -> None:
    """Patch moto in this process (idempotent)."""
    from moto.iam.access_control import IAMRequestBase

    IAMRequestBase.check_action_permitted = _check_action_permitted  # type: ignore[method-assign]


def _reset_auth(endpoint: str, value: str) -> str:
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=value.encode(), method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request) as response:
        return str(json.loads(response.read())["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])


@contextmanager
def enforced(endpoint: str) -> Iterator[None]:
    """Every request to the moto server at `endpoint` needs a known IAM user's signature and a grant."""
    install()
    previous = _reset_auth(endpoint, "0")
    try:
        yield
    finally:
        _reset_auth(endpoint, previous)
