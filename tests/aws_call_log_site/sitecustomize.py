"""Run at interpreter start when this folder is on PYTHONPATH: records the process's AWS calls to
$AWS_CALL_LOG (tests/aws_call_log.py)."""

import os

if os.environ.get("AWS_CALL_LOG"):
    from tests.aws_call_log import install

    install(os.environ["AWS_CALL_LOG"])
