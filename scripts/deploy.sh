#!/usr/bin/env bash
# Build and push both images to ECR, register the Batch job definitions (shard, reduce and the
# coordinator the main server and the schedule start), create the log group, optionally the hourly
# schedule, and optionally submit a test run and wait for it.
set -euo pipefail

usage() {
  cat <<'TXT'
usage: scripts/deploy.sh [--dry-run] [--skip-images] [--help]

Builds Dockerfile.shard and Dockerfile.reduce, pushes them to ECR (repositories created
with scan on push), registers the job definitions rendered from deploy/job-definitions/
(shard, reduce, and the coordinator under the name the main server submits), creates the
CloudWatch log group /aws/batch/job and, when SCHEDULER_ROLE_ARN is set, the hourly
EventBridge schedule that starts the coordinator. AWS CLI and docker only.

SUBMIT_TEST_JOB=true then uploads one tiny input file (3 actions of user deploy-test,
category deploy_test) under <S3_PREFIX>deploy-test/<time>/, submits the coordinator on it,
waits for the coordinator, the shard and the reduce jobs (TEST_JOB_TIMEOUT_SECONDS, default
1800, polled every TEST_JOB_POLL_SECONDS, default 10) and prints their final states; exit 1
if one failed, none was submitted, or the wait ran out.

Settings (environment):
  AWS_REGION               default ap-northeast-2
  NAME_PREFIX              default witple-batch (repositories, job definitions)
  JOB_ROLE_ARN             required: role the containers run as (deploy/iam/job-role-policy.json)
  EXECUTION_ROLE_ARN       required: role that pulls images and writes logs (deploy/iam/execution-role-policy.json)
  DATABASE_URL_SECRET_ARN  required: secret holding the writer's DATABASE_URL (reduce, coordinator)
  SHARD_DATABASE_URL_SECRET_ARN  required: secret holding the shards' read-only DATABASE_URL
                           (a login in witple_shard_reader, deploy/sql/roles.sql)
  WEBHOOK_SECRET_ARN       required: Secrets Manager secret holding WEBHOOK_SECRET
  PARTIALS_SECRET_ARN      required: secret holding PARTIALS_SECRET (32+ characters), the key
                           that signs plans and shard markers; only the three job definitions get it
  WEBHOOK_URL              required: the main server's completion webhook
  JOB_QUEUE                required: the queue the coordinator submits to (name or ARN)
  COORDINATOR_JOB_DEFINITION default witple-vectorization-job (what the main server submits)
  COORDINATOR_ROLE_ARN     default JOB_ROLE_ARN (deploy/iam/coordinator-role-policy.json)
  SCHEDULER_ROLE_ARN       optional: creates or updates the schedule <prefix>-hourly with this
                           role (deploy/iam/scheduler-role-policy.json, scheduler-trust-policy.json)
  SCHEDULE_EXPRESSION      default cron(5 * * * ? *) (five past every hour, UTC)
  ALARM_TOPIC_ARN          optional: SNS topic for the alarms in deploy/cloudwatch/ (a FAILED
                           batch; a batch rejecting more than REJECT_SHARE_ALARM_PERCENT, default 5)
  S3_BUCKET, S3_PREFIX     default user-actions-data, user-actions/
  WORK_BUCKET              required: the bucket for plans and partials, not the input bucket
                           (the collection server can write that one; deploy/iam/work-bucket-policy.json)
  WORK_PREFIX              default batch-work/
  SHARED_WORK_BUCKET=true  allow WORK_BUCKET = S3_BUCKET, if the collection server's role
                           provably cannot write WORK_PREFIX
  IMAGE_TAG                default: the git commit (short)
  ACCOUNT_ID               default: from sts get-caller-identity

  --dry-run      print every aws/docker call instead of running it
  --skip-images  no docker build/push and no ECR calls (job definitions use existing tags)
TXT
}

dry_run=0
skip_images=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    --skip-images) skip_images=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "deploy.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
run() {
  if [ "$dry_run" = 1 ]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}
need() {
  local name=$1
  if [ -z "${!name:-}" ]; then echo "deploy.sh: $name is required (see --help)" >&2; exit 2; fi
}

export AWS_REGION=${AWS_REGION:-ap-northeast-2}
export NAME_PREFIX=${NAME_PREFIX:-witple-batch}
export S3_BUCKET=${S3_BUCKET:-user-actions-data}
export S3_PREFIX=${S3_PREFIX:-user-actions/}
export WORK_PREFIX=${WORK_PREFIX:-batch-work/}
for name in JOB_ROLE_ARN EXECUTION_ROLE_ARN DATABASE_URL_SECRET_ARN SHARD_DATABASE_URL_SECRET_ARN WEBHOOK_SECRET_ARN \
    PARTIALS_SECRET_ARN WEBHOOK_URL JOB_QUEUE WORK_BUCKET; do
  need "$name"
done
if [ "$WORK_BUCKET" = "$S3_BUCKET" ] && [ "${SHARED_WORK_BUCKET:-false}" != true ]; then
  echo "deploy.sh: WORK_BUCKET must not be the input bucket: whoever writes the input could write plans and partials" \
    "(set SHARED_WORK_BUCKET=true only if the collection server's role cannot write $WORK_PREFIX)" >&2
  exit 2
fi
export COORDINATOR_JOB_DEFINITION=${COORDINATOR_JOB_DEFINITION:-witple-vectorization-job}
export COORDINATOR_ROLE_ARN=${COORDINATOR_ROLE_ARN:-$JOB_ROLE_ARN}
export SCHEDULE_EXPRESSION=${SCHEDULE_EXPRESSION:-"cron(5 * * * ? *)"}
command -v aws >/dev/null || { echo "deploy.sh: the AWS CLI (aws) is not on PATH" >&2; exit 2; }

if [ -z "${ACCOUNT_ID:-}" ]; then
  ACCOUNT_ID=$(aws sts get-caller-identity --query Account --output text)
fi
export ACCOUNT_ID
export IMAGE_TAG=${IMAGE_TAG:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo latest)}
registry="$ACCOUNT_ID.dkr.ecr.$AWS_REGION.amazonaws.com"
export SHARD_IMAGE="$registry/$NAME_PREFIX-shard:$IMAGE_TAG"
export REDUCE_IMAGE="$registry/$NAME_PREFIX-reduce:$IMAGE_TAG"

if [ "$skip_images" = 0 ]; then
  command -v docker >/dev/null || { echo "deploy.sh: docker is not on PATH (or use --skip-images)" >&2; exit 2; }
  for kind in shard reduce; do
    repo="$NAME_PREFIX-$kind"
    if ! aws ecr describe-repositories --repository-names "$repo" >/dev/null 2>&1; then
      run aws ecr create-repository --repository-name "$repo" --image-scanning-configuration scanOnPush=true
    fi
  done
  if [ "$dry_run" = 1 ]; then
    echo "+ aws ecr get-login-password | docker login --username AWS --password-stdin $registry"
  else
    aws ecr get-login-password | docker login --username AWS --password-stdin "$registry"
  fi
  run docker build -f "$root/Dockerfile.shard" -t "$SHARD_IMAGE" "$root"
  run docker build -f "$root/Dockerfile.reduce" -t "$REDUCE_IMAGE" "$root"
  run docker push "$SHARD_IMAGE"
  run docker push "$REDUCE_IMAGE"
fi

render() {
  # ${NAME} placeholders from the environment; a placeholder left unset is an error
  local text
  text=$(<"$1")
  local names
  names=$(grep -o '\${[A-Z0-9_]*}' "$1" | sort -u | tr -d '${}')
  for name in $names; do
    need "$name"
    text=${text//"\${$name}"/"${!name}"}
  done
  printf '%s\n' "$text"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for kind in shard reduce coordinator; do
  render "$root/deploy/job-definitions/$kind.json" > "$tmp/$kind.json"
  run aws batch register-job-definition --cli-input-json "file://$tmp/$kind.json" --query jobDefinitionArn --output text
done

if ! aws logs describe-log-groups --log-group-name-prefix /aws/batch/job --query 'logGroups[].logGroupName' \
    --output text 2>/dev/null | tr '\t' '\n' | grep -qx /aws/batch/job; then
  run aws logs create-log-group --log-group-name /aws/batch/job
fi
if [ -n "${SCHEDULER_ROLE_ARN:-}" ]; then
  render "$root/deploy/scheduler/hourly-schedule.json" > "$tmp/schedule.json"
  if aws scheduler get-schedule --name "$NAME_PREFIX-hourly" >/dev/null 2>&1; then
    run aws scheduler update-schedule --cli-input-json "file://$tmp/schedule.json"
  else
    run aws scheduler create-schedule --cli-input-json "file://$tmp/schedule.json"
  fi
fi
if [ -n "${ALARM_TOPIC_ARN:-}" ]; then
  export REJECT_SHARE_ALARM_PERCENT=${REJECT_SHARE_ALARM_PERCENT:-5}
  for alarm in failed-batches reject-share; do
    render "$root/deploy/cloudwatch/$alarm-alarm.json" > "$tmp/$alarm.json"
    run aws cloudwatch put-metric-alarm --cli-input-json "file://$tmp/$alarm.json"
  done
fi
echo "deploy.sh: done (images tagged $IMAGE_TAG)" >&2

if [ "${SUBMIT_TEST_JOB:-false}" = true ]; then
  stamp=$(date -u +%Y%m%dT%H%M%S)
  test_prefix="${S3_PREFIX}deploy-test/$stamp/"
  key="${test_prefix}$(date -u +year=%Y/month=%m/day=%d/hour=%H)/batch-$(date +%s)000-3-deploytst.json"
  printf '{"batch_id": "deploy-test-%s", "count": 3, "actions": [%s, %s, %s]}\n' "$stamp" \
    '{"user_id": "deploy-test", "place_category": "deploy_test", "place_id": "1", "action_type": "click"}' \
    '{"user_id": "deploy-test", "place_category": "deploy_test", "place_id": "1", "action_type": "like"}' \
    '{"user_id": "deploy-test", "place_category": "deploy_test", "place_id": "2", "action_type": "bookmark"}' \
    > "$tmp/test-batch.json"
  run aws s3 cp "$tmp/test-batch.json" "s3://$S3_BUCKET/$key" --only-show-errors
  if [ "$dry_run" = 1 ]; then
    run aws batch submit-job --job-name "$NAME_PREFIX-deploy-test-$stamp" --job-queue "$JOB_QUEUE" \
      --job-definition "$COORDINATOR_JOB_DEFINITION" --parameters "inputPrefix=$test_prefix,maxRecords=100"
    exit 0
  fi
  coordinator=$(aws batch submit-job --job-name "$NAME_PREFIX-deploy-test-$stamp" --job-queue "$JOB_QUEUE" \
    --job-definition "$COORDINATOR_JOB_DEFINITION" --parameters "inputPrefix=$test_prefix,maxRecords=100" \
    --query jobId --output text)
  echo "deploy.sh: test run submitted: coordinator $coordinator, input s3://$S3_BUCKET/$test_prefix" >&2
  deadline=$(( $(date +%s) + ${TEST_JOB_TIMEOUT_SECONDS:-1800} ))
  poll=${TEST_JOB_POLL_SECONDS:-10}
  status_of() { aws batch describe-jobs --jobs "$1" --query 'jobs[0].status' --output text || echo UNKNOWN; }
  find_job() {  # the coordinator names its jobs <prefix>-<kind>-run-<its job id>
    aws batch list-jobs --job-queue "$JOB_QUEUE" --filters "name=JOB_NAME,values=$NAME_PREFIX-$1-run-$coordinator" \
      --query 'jobSummaryList[0].jobId' --output text
  }
  failed=0
  for kind in coordinator shard reduce; do
    job=$coordinator
    if [ "$kind" != coordinator ]; then
      # ListJobs is eventually consistent: give the coordinator's jobs a minute to show
      grace=$(( $(date +%s) + 60 ))
      while job=$(find_job "$kind"); [ -z "$job" ] || [ "$job" = None ]; do
        if [ "$(date +%s)" -ge "$grace" ] || [ "$(date +%s)" -ge "$deadline" ]; then job=""; break; fi
        sleep "$poll"
      done
    fi
    if [ -z "$job" ]; then
      echo "deploy.sh: test run: no $kind job (the coordinator submitted none: see its log)" >&2; failed=1; continue
    fi
    while :; do
      state=$(status_of "$job")
      case "$state" in SUCCEEDED|FAILED) break ;; esac
      if [ "$(date +%s)" -ge "$deadline" ]; then state="$state (still waiting after ${TEST_JOB_TIMEOUT_SECONDS:-1800} s)"; break; fi
      sleep "$poll"
    done
    echo "deploy.sh: test run: $kind $job $state" >&2
    [ "$state" = SUCCEEDED ] || failed=1
  done
  exit "$failed"
fi
