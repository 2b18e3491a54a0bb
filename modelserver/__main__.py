"""`python -m modelserver`: same as `shadowgate modelserver`."""

import sys

from modelserver.cli import main

if __name__ == "__main__":
    sys.exit(main())
