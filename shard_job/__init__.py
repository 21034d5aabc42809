"""The AWS Batch array child: one shard of a run's files into a partial on S3 (`python -m shard_job`)."""
