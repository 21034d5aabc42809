"""The coordinator: plans runs and submits their jobs to AWS Batch (`python -m coordinator`)."""
