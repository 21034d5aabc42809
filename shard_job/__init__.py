"""The AWS Batch array job: plan a run into shards; each child turns its shard into partials on S3."""
