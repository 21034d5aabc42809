import sys

from export_model.cli import main

sys.exit(main())
