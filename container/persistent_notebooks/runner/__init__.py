"""The notebook runner (`python -m persistent_notebooks.runner`, supervisord's `notebook-runner`): see __main__."""

import os

os.environ.setdefault("NBFORMAT_VALIDATOR", "fastjsonschema")  # before nbformat is imported anywhere in the runner
