"""Limits AWS documents that neither botocore's models nor cfn-lint check (a template breaking
each one passes both), read from deploy/stack.yaml and from the coordinator's own request
builders, so a change that breaks one fails here instead of at the first real deploy. Each check
names the page that states its limit."""

from __future__ import annotations

import re
from typing import Any

import pytest

from coordinator.config import BatchSettings
from coordinator.sizing import MAX_ARRAY_SIZE, shard_count
from coordinator.submit import coordinator_run_id, job_name, shard_request
from tests import stack
from witple_batch.run_layout import InputFile
from witple_batch.settings import common_from_env, validate_run_id

DEFINITIONS = stack.resources_of_type(stack.load(), "AWS::Batch::JobDefinition")


def _properties(name: str) -> dict[str, Any]:
    return stack.render(DEFINITIONS[name]["Properties"], stack.names(stack.load(), stack.sample_parameters()))


@pytest.mark.parametrize("definition", sorted(DEFINITIONS))
def test_retry_strategy_within_batch_limits(definition):
    retry = _properties(definition)["RetryStrategy"]
    # docs.aws.amazon.com/batch/latest/APIReference/API_RetryStrategy.html: "You can specify between
    # 1 and 10 attempts"; evaluateOnExit: "Array of up to 5 objects"
    assert 1 <= retry["Attempts"] <= 10
    assert 1 <= len(retry["EvaluateOnExit"]) <= 5
    for entry in retry["EvaluateOnExit"]:
        # docs.aws.amazon.com/batch/latest/APIReference/API_EvaluateOnExit.html: onStatusReason and
        # onReason "can contain up to 512 characters. It can contain letters, numbers, periods (.),
        # colons (:), and white space (including spaces and tabs). It can optionally end with an
        # asterisk (*)"; onExitCode "can contain only numbers, and can end with an asterisk (*)", up
        # to 512 characters; action RETRY or EXIT
        for key in ("OnStatusReason", "OnReason"):
            if key in entry:
                assert len(entry[key]) <= 512 and re.fullmatch(r"[A-Za-z0-9.: \t]*\*?", entry[key]), entry
        if "OnExitCode" in entry:
            assert len(entry["OnExitCode"]) <= 512 and re.fullmatch(r"[0-9]*\*?", entry["OnExitCode"]), entry
        assert entry["Action"].upper() in ("RETRY", "EXIT")
        assert {"OnStatusReason", "OnReason", "OnExitCode"} & set(entry), entry


@pytest.mark.parametrize("definition", sorted(DEFINITIONS))
def test_attempt_timeout_at_least_60_seconds(definition):
    # docs.aws.amazon.com/batch/latest/APIReference/API_JobTimeout.html: "The minimum value for the
    # timeout is 60 seconds."
    assert _properties(definition)["Timeout"]["AttemptDurationSeconds"] >= 60


# docs.aws.amazon.com/batch/latest/APIReference/API_ResourceRequirement.html: for Fargate, VCPU
# "must match one of the supported values and the MEMORY values must be one of the values
# supported for that VCPU value" (larger sizes exist; these are the ones up to 16 vCPU)
FARGATE_MEMORY_MIB = {
    "0.25": {512, 1024, 2048},
    "0.5": {1024, 2048, 3072, 4096},
    "1": set(range(2048, 8192 + 1, 1024)),
    "2": set(range(4096, 16384 + 1, 1024)),
    "4": set(range(8192, 30720 + 1, 1024)),
    "8": set(range(16384, 61440 + 1, 4096)),
    "16": set(range(32768, 122880 + 1, 8192)),
}


@pytest.mark.parametrize("definition", sorted(DEFINITIONS))
def test_fargate_vcpu_and_memory_are_a_supported_pair(definition):
    container = _properties(definition)["ContainerProperties"]
    requirements = {r["Type"]: r["Value"] for r in container["ResourceRequirements"]}
    assert requirements["VCPU"] in FARGATE_MEMORY_MIB
    assert int(requirements["MEMORY"]) in FARGATE_MEMORY_MIB[requirements["VCPU"]]


@pytest.mark.parametrize("definition", sorted(DEFINITIONS))
def test_ref_placeholders_only_in_the_command_each_with_a_default(definition):
    # docs.aws.amazon.com/batch/latest/userguide/job_definition_parameters.html#parameters and
    # .../example-use-parameters.html: "Ref::" placeholders are substituted in the command; the
    # job definition's parameters give their defaults (a placeholder with none reaches the container
    # as the literal "Ref::name")
    properties = _properties(definition)
    container = dict(properties["ContainerProperties"])
    command = container.pop("Command")
    assert "Ref::" not in repr(container) and "Ref::" not in repr({**properties, "ContainerProperties": None})
    placeholders = {word[len("Ref::") :] for word in command if word.startswith("Ref::")}
    assert placeholders <= set(properties.get("Parameters", {}))


# docs.aws.amazon.com/batch/latest/APIReference/API_SubmitJob.html, jobName: "It can be up to 128
# letters long. The first character must be alphanumeric, can contain uppercase and lowercase
# letters, numbers, hyphens (-), and underscores (_)."
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
LONGEST_PREFIX = "w" + "x" * 28 + "z"  # NamePrefix's AllowedPattern allows up to 30 characters


def test_the_longest_name_prefix_is_what_the_template_allows():
    pattern = stack.load()["Parameters"]["NamePrefix"]["AllowedPattern"]
    assert re.fullmatch(pattern, LONGEST_PREFIX) and not re.fullmatch(pattern, LONGEST_PREFIX + "x")


@pytest.mark.parametrize(
    "batch_id",
    [
        coordinator_run_id("4c7599ae-0a82-49aa-ba5a-4727fcce14a8"),  # a coordinator started by Batch
        coordinator_run_id("4c7599ae-0a82-49aa-ba5a-4727fcce14a8:12"),  # an array child's id
        f"{coordinator_run_id('4c7599ae-0a82-49aa-ba5a-4727fcce14a8')}-7",  # a later run of a chain
        "batch-20261127T130802Z-569f4400",
        validate_run_id("a." * 63 + "zz"),  # the longest BATCH_ID, full of characters Batch refuses
    ],
)
@pytest.mark.parametrize("kind", ["shard", "reduce"])
def test_the_coordinators_job_names_are_valid_batch_job_names(batch_id, kind):
    settings = BatchSettings("queue", f"{LONGEST_PREFIX}-shard", f"{LONGEST_PREFIX}-reduce", LONGEST_PREFIX)
    assert JOB_NAME.fullmatch(job_name(settings, kind, batch_id))


def test_the_other_job_names_are_valid_batch_job_names():
    schedule = stack.render(
        stack.load()["Resources"]["HourlySchedule"]["Properties"]["Target"]["Input"],
        stack.names(stack.load(), stack.sample_parameters(NamePrefix=LONGEST_PREFIX)),
    )
    scheduled = re.search(r'"JobName": "([^"]+)"', schedule).group(1)  # type: ignore[union-attr]
    deploy_test = f"{LONGEST_PREFIX}-deploy-test-20261207T031612"  # deploy.sh's SUBMIT_TEST_JOB
    main_server = "witple-vectorization-1764230400"
    for name in (scheduled, deploy_test, main_server):
        assert JOB_NAME.fullmatch(name), name


def test_array_jobs_hold_2_to_10000_children():
    # docs.aws.amazon.com/batch/latest/APIReference/API_ArrayProperties.html and the EventBridge
    # BatchArrayProperties page: "The array size can be between 2 and 10,000."
    assert MAX_ARRAY_SIZE == 10_000
    settings = BatchSettings("queue", "p-shard", "p-reduce", "p")
    config = common_from_env({"PARTIALS_SECRET": "x" * 32})
    assert "arrayProperties" not in shard_request(settings, config, "b", 1)  # one child: a plain job
    for shards in (2, 3, MAX_ARRAY_SIZE):
        assert 2 <= shard_request(settings, config, "b", shards)["arrayProperties"]["size"] <= 10_000
    files = [InputFile(f"user-actions/batch-{i}-10-x.json", 1, "e") for i in range(12_000)]
    most = shard_count(files, shards=None, target_mb=1e-6)  # one shard per byte wanted: capped
    assert most == MAX_ARRAY_SIZE


_FIELDS = (  # (name, lowest, highest, names, wildcards) per field, in order
    ("minutes", 0, 59, (), ",-*/"),
    ("hours", 0, 23, (), ",-*/"),
    ("day-of-month", 1, 31, (), ",-*?/LW"),
    ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), ",-*/"),
    ("day-of-week", 1, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), ",-*?L#"),
    ("year", 1970, 2199, (), ",-*/"),
)


def _valid_field(text: str, lowest: int, highest: int, names: tuple[str, ...], wildcards: str) -> bool:
    def value(token: str) -> bool:
        if token in names:
            return True
        return token.isdigit() and lowest <= int(token) <= highest

    for part in text.split(","):
        if part in ("*", "?", "L"):
            if part not in wildcards:
                return False
            continue
        base, _, step = part.partition("/")
        if step and ("/" not in wildcards or not step.isdigit()):
            return False
        if base.endswith("W") and "W" in wildcards:
            base = base[:-1]
        if "#" in base and "#" in wildcards:
            base, _, nth = base.partition("#")
            if not (nth.isdigit() and 1 <= int(nth) <= 5):
                return False
        ends = base.split("-")
        if base != "*" and (len(ends) > 2 or not all(value(end) for end in ends)):
            return False
    return True


def valid_cron(expression: str) -> bool:
    """EventBridge Scheduler's cron form (docs.aws.amazon.com/scheduler/latest/UserGuide/
    schedule-types.html#cron-based): cron(minutes hours day-of-month month day-of-week year), six
    fields; a value or * in one of day-of-month and day-of-week needs ? in the other."""
    match = re.fullmatch(r"cron\((.*)\)", expression)
    fields = match.group(1).split() if match else []
    if len(fields) != 6:
        return False
    if (fields[2] == "?") == (fields[4] == "?"):
        return False
    return all(_valid_field(text, *spec[1:]) for text, spec in zip(fields, _FIELDS, strict=True))


@pytest.mark.parametrize(
    ("expression", "valid"),
    [
        ("cron(0 10 * * ? *)", True),  # the page's examples
        ("cron(15 12 * * ? *)", True),
        ("cron(0 18 ? * MON-FRI *)", True),
        ("cron(0 8 1 * ? *)", True),
        ("cron(0/15 * * * ? *)", True),
        ("cron(5 * * * *)", False),  # five fields: crontab's form, not Scheduler's
        ("cron(5 * * * * *)", False),  # * in both day fields
        ("cron(5 * ? * ? *)", False),  # ? in both
        ("cron(60 * * * ? *)", False),
        ("rate(1 hour)", False),
    ],
)
def test_the_cron_check_reads_the_documented_form(expression, valid):
    assert valid_cron(expression) is valid


def test_the_schedule_is_a_valid_scheduler_cron_five_past_every_hour_utc():
    properties = stack.load()["Resources"]["HourlySchedule"]["Properties"]
    expression = stack.load()["Parameters"]["ScheduleExpression"]["Default"]
    assert valid_cron(expression)
    assert expression.split()[:2] == ["cron(5", "*"]
    assert properties["ScheduleExpressionTimezone"] == "UTC"
