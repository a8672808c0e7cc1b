"""`python -m app` runs the ModelDeck command line."""

import sys

from app.cli import main

sys.exit(main())
