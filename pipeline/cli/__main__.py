"""`python -m pipeline.cli`: the same as the `tracelake` console script."""

import sys

from pipeline.cli.parser import main

if __name__ == "__main__":  # worker processes import this module again (multiprocessing spawn): no main there
    sys.exit(main())
