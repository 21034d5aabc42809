"""deploy/stack.yaml as CloudFormation reads it (cfn-lint's loader), rendered with given names.

The tests read every limit, policy and job definition from the template itself, so a change to the
template is what they check. `render` resolves the intrinsic functions the template uses (Ref,
Fn::Sub, Fn::GetAtt, Fn::If with its conditions, AWS::NoValue) the way CloudFormation would for
the given parameters and physical resource names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "deploy" / "stack.yaml"
REGION = "ap-northeast-2"
ACCOUNT = "123456789012"
_NO_VALUE = object()
_SUB = re.compile(r"\$\{([^}!]+)\}")


def load(path: Path = TEMPLATE) -> dict[str, Any]:
    return cfn_yaml.load(str(path))


def resources_of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


@dataclass(frozen=True)
class Names:
    """What Ref and Fn::GetAtt resolve to in one deployment."""

    refs: dict[str, str]  # parameters, pseudo parameters and resources by logical id
    attributes: dict[str, str]  # "LogicalId.Attribute"
    conditions: dict[str, bool]


def _physical_defaults(template: dict[str, Any], refs: dict[str, str]) -> dict[str, str]:
    """Each resource's Ref as CloudFormation would give it when the template names the resource."""
    named = {
        "AWS::ECR::Repository": "RepositoryName",
        "AWS::Logs::LogGroup": "LogGroupName",
        "AWS::Scheduler::Schedule": "Name",
        "AWS::CloudWatch::Alarm": "AlarmName",
    }
    plain = Names(refs, {}, {})
    out = {}
    for logical, resource in template["Resources"].items():
        kind, properties = resource["Type"], resource.get("Properties", {})
        if kind in named:
            out[logical] = render(properties[named[kind]], plain)
        elif kind == "AWS::Batch::JobDefinition":  # Ref is the ARN of the revision
            name = render(properties["JobDefinitionName"], plain)
            out[logical] = f"arn:aws:batch:{refs['AWS::Region']}:{refs['AWS::AccountId']}:job-definition/{name}:1"
        else:
            out[logical] = logical.lower()  # a generated name (roles, the work bucket)
    return out


def _attributes(template: dict[str, Any], refs: dict[str, str]) -> dict[str, str]:
    region, account = refs["AWS::Region"], refs["AWS::AccountId"]
    out = {}
    for logical, resource in template["Resources"].items():
        ref, kind = refs[logical], resource["Type"]
        if kind == "AWS::IAM::Role":
            out[f"{logical}.Arn"] = f"arn:aws:iam::{account}:role/{ref}"
        elif kind == "AWS::S3::Bucket":
            out[f"{logical}.Arn"] = f"arn:aws:s3:::{ref}"
        elif kind == "AWS::ECR::Repository":
            out[f"{logical}.Arn"] = f"arn:aws:ecr:{region}:{account}:repository/{ref}"
            out[f"{logical}.RepositoryUri"] = f"{account}.dkr.ecr.{region}.amazonaws.com/{ref}"
        elif kind == "AWS::Logs::LogGroup":
            out[f"{logical}.Arn"] = f"arn:aws:logs:{region}:{account}:log-group:{ref}:*"
    return out


def names(
    template: dict[str, Any],
    parameters: dict[str, str],
    physical: dict[str, str] | None = None,
    *,
    region: str = REGION,
    account: str = ACCOUNT,
) -> Names:
    """The deployment of `template` with `parameters` (defaults filled in) whose resources have the
    `physical` ids given (CloudFormation's), or the names the template gives them."""
    refs = {name: str(p.get("Default", "")) for name, p in template["Parameters"].items()}
    refs |= parameters
    refs |= {
        "AWS::Region": region,
        "AWS::AccountId": account,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
    }
    refs |= _physical_defaults(template, refs) | (physical or {})
    conditions = {name: render(c, Names(refs, {}, {})) for name, c in template.get("Conditions", {}).items()}
    return Names(refs, _attributes(template, refs), conditions)


def _sub(text: str, names: Names, local: dict[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in local:
            return str(local[key])
        return names.attributes[key] if "." in key else names.refs[key]

    return _SUB.sub(value, text)


def render(node: Any, names: Names) -> Any:
    """`node` with every intrinsic function resolved; AWS::NoValue entries dropped."""
    if isinstance(node, list):
        return [v for v in (render(item, names) for item in node) if v is not _NO_VALUE]
    if not isinstance(node, dict):
        return str(node) if isinstance(node, str) else node
    if len(node) == 1:
        [(key, arg)] = node.items()
        if key == "Ref":
            return _NO_VALUE if arg == "AWS::NoValue" else names.refs[arg]
        if key == "Fn::Sub":
            text, local = (arg, {}) if isinstance(arg, str) else (arg[0], render(arg[1], names))
            return _sub(text, names, local)
        if key == "Fn::GetAtt":
            return names.attributes[arg if isinstance(arg, str) else ".".join(arg)]
        if key == "Fn::If":
            condition, then, otherwise = arg
            return render(then if names.conditions[condition] else otherwise, names)
        if key == "Fn::Equals":
            left, right = render(arg, names)
            return left == right
        if key == "Fn::Not":
            return not render(arg[0], names)
    return {k: v for k, v in ((k, render(v, names)) for k, v in node.items()) if v is not _NO_VALUE}


def rendered_resources(template: dict[str, Any], names: Names, kind: str) -> dict[str, dict[str, Any]]:
    """Each resource of `kind` by logical id, its properties rendered."""
    return {name: render(r.get("Properties", {}), names) for name, r in resources_of_type(template, kind).items()}


def role_policies(template: dict[str, Any], names: Names) -> dict[str, dict[str, Any]]:
    """Each role's one inline policy document, rendered, by the role's logical id."""
    roles = rendered_resources(template, names, "AWS::IAM::Role")
    return {role: properties["Policies"][0]["PolicyDocument"] for role, properties in roles.items()}


def sample_parameters(**overrides: str) -> dict[str, str]:
    """Values for the template's required parameters (the ARNs' formats as AWS gives them)."""
    secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret"
    return {
        "ImageTag": "test",
        "JobQueueArn": f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/witple-fargate-queue",
        "WebhookUrl": "https://main.example/batch/webhook/completion",
        "DatabaseUrlSecretArn": f"{secret}:witple-db-AbCdEf",
        "ShardDatabaseUrlSecretArn": f"{secret}:witple-db-reader-GhIjKl",
        "WebhookSecretArn": f"{secret}:witple-webhook-MnOpQr",
        "PartialsSecretArn": f"{secret}:witple-partials-StUvWx",
        **overrides,
    }


def _bash_array(name: str) -> list[str]:
    text = (REPO / "scripts" / "deploy.sh").read_text()
    return text.split(f"\n{name}=(", 1)[1].split(")", 1)[0].split()


def deploy_sh_parameters() -> dict[str, str]:
    """deploy.sh's one list: template parameter -> the environment variable it comes from."""
    return dict(entry.split("=", 1) for entry in _bash_array("PARAMETERS"))


def deploy_sh_required() -> set[str]:
    return set(_bash_array("REQUIRED"))


def parameters_from(env: dict[str, str]) -> dict[str, str]:
    """The parameters deploy.sh passes for `env` (unset or empty: the template's default)."""
    return {name: env[variable] for name, variable in deploy_sh_parameters().items() if env.get(variable)}
