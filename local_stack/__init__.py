"""Local stand-ins for AWS Batch's world: moto S3, embedded PostgreSQL, a webhook receiver, the array runner."""
