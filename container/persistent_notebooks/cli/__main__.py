"""python -m persistent_notebooks.cli: the same as notebookctl."""

import sys

from . import main

sys.exit(main())
