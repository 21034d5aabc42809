#!/usr/bin/env bash
# Build and push both images to ECR, register both Batch job definitions, create the log group.
set -euo pipefail

usage() {
  cat <<'TXT'
usage: scripts/deploy.sh [--dry-run] [--skip-images] [--help]

Builds Dockerfile.shard and Dockerfile.reduce, pushes them to ECR (repositories created
with scan on push), registers the job definitions rendered from deploy/job-definitions/,
and creates the CloudWatch log group /aws/batch/job. AWS CLI and docker only.

Settings (environment):
  AWS_REGION               default ap-northeast-2
  NAME_PREFIX              default witple-batch (repositories, job definitions)
  JOB_ROLE_ARN             required: role the containers run as (deploy/iam/job-role-policy.json)
  EXECUTION_ROLE_ARN       required: role that pulls images and writes logs (deploy/iam/execution-role-policy.json)
  DATABASE_URL_SECRET_ARN  required: Secrets Manager secret holding DATABASE_URL (reduce; shards read stored vectors)
  WEBHOOK_SECRET_ARN       required: Secrets Manager secret holding WEBHOOK_SECRET
  WEBHOOK_URL              required: the main server's completion webhook
  S3_BUCKET, S3_PREFIX     default user-actions-data, user-actions/
  WORK_BUCKET, WORK_PREFIX default S3_BUCKET, batch-work/
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
export WORK_BUCKET=${WORK_BUCKET:-$S3_BUCKET}
export WORK_PREFIX=${WORK_PREFIX:-batch-work/}
for name in JOB_ROLE_ARN EXECUTION_ROLE_ARN DATABASE_URL_SECRET_ARN WEBHOOK_SECRET_ARN WEBHOOK_URL; do need "$name"; done
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
    text=${text//"\${$name}"/${!name}}
  done
  printf '%s\n' "$text"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for kind in shard reduce; do
  render "$root/deploy/job-definitions/$kind.json" > "$tmp/$kind.json"
  run aws batch register-job-definition --cli-input-json "file://$tmp/$kind.json" --query jobDefinitionArn --output text
done

if ! aws logs describe-log-groups --log-group-name-prefix /aws/batch/job --query 'logGroups[].logGroupName' \
    --output text 2>/dev/null | tr '\t' '\n' | grep -qx /aws/batch/job; then
  run aws logs create-log-group --log-group-name /aws/batch/job
fi
echo "deploy.sh: done (images tagged $IMAGE_TAG)" >&2
