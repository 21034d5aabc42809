#!/usr/bin/env bash
# Build and push both images (linux/amd64, tagged by git commit), then deploy deploy/stack.yaml with
# CloudFormation: one change set, rolled back if it fails. README: "Deploying to AWS Batch".
set -euo pipefail

usage() {
  cat <<'TXT'
usage: scripts/deploy.sh [--dry-run | --plan] [--skip-images] [--help]

  (default)      build and push the images, then create or update the stack and wait for it
  --dry-run      lint the template (cfn-lint) and print the parameters and images: no AWS call,
                 no credentials, no network
  --plan         create a change set and print it without executing it (images not built)
  --skip-images  deploy the stack only (its job definitions use IMAGE_TAG's existing images)

Settings (environment), each one template parameter (deploy/stack.yaml says what it is):
  JOB_QUEUE_ARN, WEBHOOK_URL, DATABASE_URL_SECRET_ARN, SHARD_DATABASE_URL_SECRET_ARN,
  WEBHOOK_SECRET_ARN, PARTIALS_SECRET_ARN    required
  NAME_PREFIX (witple-batch), S3_BUCKET, S3_PREFIX, WORK_PREFIX, SECRETS_KMS_KEY_ARN,
  COORDINATOR_JOB_DEFINITION (witple-vectorization-job), SCHEDULE_EXPRESSION, ALARM_TOPIC_ARN,
  REJECT_SHARE_ALARM_PERCENT, CATALOGUE_VECTOR_COLUMN    optional: unset is the template's default
                 on a create and the stack's current value on an update
  IMAGE_TAG      default: the git commit (refused when the work tree has changes)
  STACK_NAME     default: NAME_PREFIX;  AWS_REGION default ap-northeast-2

SUBMIT_TEST_JOB=true then uploads one tiny input file (3 actions of user deploy-test) under
<S3_PREFIX>deploy-test/<time>/, submits the coordinator on it, waits for the coordinator, shard
and reduce jobs (TEST_JOB_TIMEOUT_SECONDS, default 1800, polled every TEST_JOB_POLL_SECONDS,
default 10) and prints their final states; exit 1 if one failed or none was submitted.
TXT
}

# template parameter = environment variable: the one list of what deploy.sh passes
PARAMETERS=(
  NamePrefix=NAME_PREFIX ImageTag=IMAGE_TAG JobQueueArn=JOB_QUEUE_ARN WebhookUrl=WEBHOOK_URL
  InputBucket=S3_BUCKET InputPrefix=S3_PREFIX WorkPrefix=WORK_PREFIX
  DatabaseUrlSecretArn=DATABASE_URL_SECRET_ARN ShardDatabaseUrlSecretArn=SHARD_DATABASE_URL_SECRET_ARN
  WebhookSecretArn=WEBHOOK_SECRET_ARN PartialsSecretArn=PARTIALS_SECRET_ARN SecretsKmsKeyArn=SECRETS_KMS_KEY_ARN
  CoordinatorJobDefinitionName=COORDINATOR_JOB_DEFINITION ScheduleExpression=SCHEDULE_EXPRESSION
  AlarmTopicArn=ALARM_TOPIC_ARN RejectSharePercent=REJECT_SHARE_ALARM_PERCENT
  CatalogueVectorColumn=CATALOGUE_VECTOR_COLUMN
)
REQUIRED=(JOB_QUEUE_ARN WEBHOOK_URL DATABASE_URL_SECRET_ARN SHARD_DATABASE_URL_SECRET_ARN WEBHOOK_SECRET_ARN
  PARTIALS_SECRET_ARN)

mode=deploy
skip_images=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) mode=dry-run ;;
    --plan) mode=plan ;;
    --skip-images) skip_images=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "deploy.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
template="$root/deploy/stack.yaml"
fail() { echo "deploy.sh: $*" >&2; exit 2; }
for name in "${REQUIRED[@]}"; do
  [ -n "${!name:-}" ] || fail "$name is required (see --help)"
done
export AWS_REGION=${AWS_REGION:-ap-northeast-2}
export NAME_PREFIX=${NAME_PREFIX:-witple-batch}
STACK_NAME=${STACK_NAME:-$NAME_PREFIX}
if [ -z "${IMAGE_TAG:-}" ]; then
  [ -z "$(git -C "$root" status --porcelain)" ] || fail "the work tree has changes: commit them (images are tagged by commit) or set IMAGE_TAG"
  IMAGE_TAG=$(git -C "$root" rev-parse --short=12 HEAD)
fi
export IMAGE_TAG
build() {  # one image, built for Fargate's x86_64 whatever the machine building it
  $show docker build --platform linux/amd64 -f "$root/Dockerfile.$1" -t "$2" "$root"
}
overrides=()
for entry in "${PARAMETERS[@]}"; do
  name=${entry#*=}
  if [ -n "${!name:-}" ]; then overrides+=("${entry%%=*}=${!name}"); fi
done

if [ "$mode" = dry-run ]; then
  cfn_lint=$(command -v cfn-lint || echo "$root/.venv/bin/cfn-lint")
  "$cfn_lint" "$template" || fail "cfn-lint found problems in $template"
  echo "stack $STACK_NAME in $AWS_REGION from deploy/stack.yaml, parameters:"
  printf '  %s\n' "${overrides[@]}"
  for kind in shard reduce; do
    show=echo build "$kind" "<account>.dkr.ecr.$AWS_REGION.amazonaws.com/$NAME_PREFIX-$kind:$IMAGE_TAG"
  done
  exit 0
fi

command -v aws >/dev/null || fail "the AWS CLI (aws) is not on PATH"
cfn() {  # create or update the stack through one change set; CloudFormation rolls a failed one back
  aws cloudformation deploy --stack-name "$STACK_NAME" --template-file "$template" --capabilities CAPABILITY_IAM \
    --no-fail-on-empty-changeset --parameter-overrides "${overrides[@]}" "$@"
}
resource() {  # a resource's name (its physical id) in the deployed stack, by its logical id in the template
  aws cloudformation describe-stack-resources --stack-name "$STACK_NAME" --output text \
    --query "StackResources[?LogicalResourceId=='$1'].PhysicalResourceId"
}

if [ "$mode" = plan ]; then
  planned=$(cfn --no-execute-changeset)
  change_set=$(grep -o 'arn:aws[a-z-]*:cloudformation:[^ ]*:changeSet/[^ ]*' <<<"$planned" || true)
  if [ -z "$change_set" ]; then echo "deploy.sh: no changes: $STACK_NAME is up to date" >&2; exit 0; fi
  aws cloudformation describe-change-set --change-set-name "$change_set" --output table \
    --query 'Changes[].ResourceChange.{Action: Action, Resource: LogicalResourceId, Type: ResourceType, Replacement: Replacement}'
  echo "deploy.sh: change set not executed: $change_set" >&2
  exit 0
fi

deployed=0
if [ "$skip_images" = 0 ]; then
  command -v docker >/dev/null || fail "docker is not on PATH (or use --skip-images)"
  # the repositories belong to the stack: a first deploy creates it before there is anything to
  # push (its job definitions name the images pushed next); a later one pushes, then updates
  if ! aws cloudformation describe-stacks --stack-name "$STACK_NAME" >/dev/null 2>&1; then cfn; deployed=1; fi
  for kind in shard reduce; do
    repository=$(resource "${kind^}Repository")
    uri=$(aws ecr describe-repositories --repository-names "$repository" --query 'repositories[0].repositoryUri' --output text)
    if aws ecr describe-images --repository-name "$repository" --image-ids "imageTag=$IMAGE_TAG" >/dev/null 2>&1; then
      echo "deploy.sh: $uri:$IMAGE_TAG already pushed (tags are immutable)" >&2; continue
    fi
    aws ecr get-login-password | docker login --username AWS --password-stdin "${uri%%/*}"
    show="" build "$kind" "$uri:$IMAGE_TAG"
    docker push "$uri:$IMAGE_TAG"
  done
fi
[ "$deployed" = 1 ] || cfn
echo "deploy.sh: stack $STACK_NAME deployed (images tagged $IMAGE_TAG)" >&2

[ "${SUBMIT_TEST_JOB:-false}" = true ] || exit 0
bucket=${S3_BUCKET:-user-actions-data}
stamp=$(date -u +%Y%m%dT%H%M%S)
test_prefix="${S3_PREFIX:-user-actions/}deploy-test/$stamp/"
key="${test_prefix}$(date -u +year=%Y/month=%m/day=%d/hour=%H)/batch-$(date +%s)000-3-deploytst.json"
body=$(mktemp)
trap 'rm -f "$body"' EXIT
printf '{"batch_id": "deploy-test-%s", "count": 3, "actions": [%s, %s, %s]}\n' "$stamp" \
  '{"user_id": "deploy-test", "place_category": "deploy_test", "place_id": "1", "action_type": "click"}' \
  '{"user_id": "deploy-test", "place_category": "deploy_test", "place_id": "1", "action_type": "like"}' \
  '{"user_id": "deploy-test", "place_category": "deploy_test", "place_id": "2", "action_type": "bookmark"}' >"$body"
aws s3 cp "$body" "s3://$bucket/$key" --only-show-errors
coordinator=$(aws batch submit-job --job-name "$NAME_PREFIX-deploy-test-$stamp" --job-queue "$JOB_QUEUE_ARN" \
  --job-definition "$(resource CoordinatorJobDefinition)" --parameters "inputPrefix=$test_prefix,maxRecords=100" \
  --query jobId --output text)
echo "deploy.sh: test run submitted: coordinator $coordinator, input s3://$bucket/$test_prefix" >&2
deadline=$(( $(date +%s) + ${TEST_JOB_TIMEOUT_SECONDS:-1800} ))
poll=${TEST_JOB_POLL_SECONDS:-10}
status_of() { aws batch describe-jobs --jobs "$1" --query 'jobs[0].status' --output text || echo UNKNOWN; }
find_job() {  # the coordinator names its jobs <prefix>-<kind>-run-<its job id>
  aws batch list-jobs --job-queue "$JOB_QUEUE_ARN" --filters "name=JOB_NAME,values=$NAME_PREFIX-$1-run-$coordinator" \
    --query 'jobSummaryList[0].jobId' --output text
}
failed=0
for kind in coordinator shard reduce; do
  job=$coordinator
  if [ "$kind" != coordinator ]; then
    grace=$(( $(date +%s) + 60 ))  # ListJobs is eventually consistent: a minute for the coordinator's jobs to show
    while job=$(find_job "$kind"); [ -z "$job" ] || [ "$job" = None ]; do
      if [ "$(date +%s)" -ge "$grace" ] || [ "$(date +%s)" -ge "$deadline" ]; then job=""; break; fi
      sleep "$poll"
    done
  fi
  if [ -z "$job" ]; then
    echo "deploy.sh: test run: no $kind job (the coordinator submitted none: see its log)" >&2; failed=1; continue
  fi
  while state=$(status_of "$job"); [ "$state" != SUCCEEDED ] && [ "$state" != FAILED ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then state="$state (still waiting after ${TEST_JOB_TIMEOUT_SECONDS:-1800} s)"; break; fi
    sleep "$poll"
  done
  echo "deploy.sh: test run: $kind $job $state" >&2
  [ "$state" = SUCCEEDED ] || failed=1
done
exit "$failed"
