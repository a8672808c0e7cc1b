"""Entry point frozen into the standalone binary: the same as the `modeldeck` console script."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
