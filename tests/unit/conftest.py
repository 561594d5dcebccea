"""The unit layer: the container package's pure logic, imported on the host (no Docker, no Jupyter)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "container"))
