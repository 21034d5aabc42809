import sys

from reduce_job.cli import main

sys.exit(main())
