import sys

from shard_job.cli import main

sys.exit(main(sys.argv[1:]))
