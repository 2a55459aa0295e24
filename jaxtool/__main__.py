"""`python -m jaxtool ...` runs the `jaxtool` command line."""

import sys

from jaxtool.cli import main

sys.exit(main())
