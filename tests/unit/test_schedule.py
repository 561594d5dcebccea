"""Unit layer: the order in which a real pytest-xdist hands the suite's modules to its workers (tests/schedule.py):
the longest first, whatever the order of the files, the hub modules together."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_workers_get_the_longest_modules_first_and_the_hubs_together(tmp_path: Path):
    """Modules named as the suite's, each test writing its module's name when it runs: one worker should run the hub
    group (test_hub.py, then test_hub_swarm.py) first, then test_runs.py, then the modules LONGEST_FIRST does not
    name, in file order (the files' own order would begin with test_away.py)."""
    ran = tmp_path / "ran.txt"
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
        "from schedule import pytest_xdist_make_scheduler  # noqa: F401\n")
    modules = ["test_a_first_file.py", "test_away.py", "test_hub.py", "test_hub_swarm.py", "test_runs.py",
               "test_z_last_file.py"]
    for module in modules:
        (tmp_path / module).write_text(
            "def test_one():\n"
            f"    with open({str(ran)!r}, 'a') as ran:\n"
            f"        ran.write({module!r} + '\\n')\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "1",
                           "--dist", "loadfile", "--no-loadscope-reorder", "-c", str(tmp_path / "pytest.ini"),
                           "--rootdir", str(tmp_path), str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ran.read_text().split() == ["test_hub.py", "test_hub_swarm.py", "test_runs.py", "test_away.py",
                                       "test_a_first_file.py", "test_z_last_file.py"]
