"""``python -m stillhouse``: the same command line as the ``stillhouse`` script (same exit codes)."""

import sys

from stillhouse.pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main())
