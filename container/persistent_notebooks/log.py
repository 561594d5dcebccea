"""The one line every program of the container prints for people (stderr, prefixed), outside Jupyter's logging."""

from __future__ import annotations

import sys


def log(message: str) -> None:
    print(f"persistent-notebooks: {message}", file=sys.stderr, flush=True)
