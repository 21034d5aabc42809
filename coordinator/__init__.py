"""The coordinator: plans a run, then submits its shard array and its reduce (`python -m coordinator submit`).

A stand-in: the commands are still shard_job's (`submit`, `plan`, `check`, `quarantine`, same
flags) until this package takes them over, so the job definitions can name it already.
"""
