"""Unit layer: scripts/test's set-up in the background (Background): what it printed shown when waited for, a failure
named, a stop that ends what runs."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "test"


@pytest.fixture(scope="module")
def script():
    loader = importlib.machinery.SourceFileLoader("scripts_test", str(SCRIPT))
    spec = importlib.util.spec_from_loader("scripts_test", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_what_a_command_printed_shows_between_its_step_lines_when_waited_for(script, capsys):
    """A command's output should not show while it runs, then all of it, after a line saying when it began and before
    one saying it is done."""
    code = "import sys; print('hello', flush=True); print('err', file=sys.stderr)"
    job = script.Background("greeting", [sys.executable, "-c", code])
    job.thread.join()
    assert capsys.readouterr().out == "", "a background command printed while the foreground went on"
    job.wait()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("greeting (in the background)") and lines[-1].endswith("greeting: done"), lines
    assert set(lines[1:-1]) == {"hello", "err"}, lines


def test_a_failed_command_fails_its_wait_by_name(script, capsys):
    """A command that fails should fail wait() with its name and exit status, its output shown above."""
    job = script.Background("base image", [sys.executable, "-c", "print('no mirror'); raise SystemExit(3)"])
    with pytest.raises(script.Fail, match=r"base image: failed \(exit status 3\)"):
        job.wait()
    out = capsys.readouterr().out
    assert "no mirror" in out and out.rstrip().endswith("base image: failed"), out
    job.stop(interrupt=False)  # as scripts/test's last step does: what was shown is not shown again
    assert capsys.readouterr().out == ""


CLEANS_UP = """
import pathlib, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
pathlib.Path(sys.argv[1]).touch()
try:
    child.wait()
finally:
    child.kill()
    print("cleaned up", flush=True)
"""


def test_stop_interrupts_a_running_command_only_when_told_to(script, tmp_path):
    """stop(interrupt=True) should end a command at once, letting it end what it runs itself (as Ctrl-C would);
    stop(interrupt=False) should let it finish."""
    started = tmp_path / "started"
    job = script.Background("test image", [sys.executable, "-c", CLEANS_UP, str(started)])
    deadline = time.monotonic() + 10
    while not started.exists():
        assert time.monotonic() < deadline, "the command did not start its child within 10 s"
        time.sleep(0.05)
    began = time.monotonic()
    job.stop(interrupt=True)
    assert time.monotonic() - began < 10 and job.process.returncode is not None, "the command was not ended"
    assert "cleaned up" in "".join(job.output), f"the command was not let clean up: {job.output}"
    job = script.Background("compose", [sys.executable, "-c", "import time; time.sleep(0.5); print('made')"])
    job.stop(interrupt=False)
    assert job.process.returncode == 0 and "made\n" in job.output, job.output
