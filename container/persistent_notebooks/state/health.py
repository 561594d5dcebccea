"""The watchdog's report: one line in a file on the container's /dev/shm (a tmpfs, new at each container
start), `SECONDS REPORT`: the time of the round (seconds since boot, as /proc/uptime counts them) and
`ok` or what is wrong. Docker's healthcheck (container/healthcheck, a shell script of builtins: no
Python is started every few seconds) reads it; so does `notebookctl health`.
"""

from __future__ import annotations

import time
from pathlib import Path

from .. import atomic

HEALTH_FILE = Path("/dev/shm/persistent-notebooks-health")
# A report older than this is no report: the watchdog (or supervisord) is stuck. Docker's healthcheck
# uses the same number.
MAX_AGE = 20


def uptime() -> int:
    return int(time.clock_gettime(time.CLOCK_BOOTTIME))


def write_health(report: str, path: Path = HEALTH_FILE) -> None:
    """Replace the report, whole (a reader never sees half a line)."""
    atomic.write(path, f"{uptime()} {' '.join(report.split())}\n", 0o600, fsync=False)  # (a tmpfs)


def read_health(path: Path = HEALTH_FILE) -> tuple[bool, str]:
    """(healthy, what to tell): healthy when the last report is `ok` and at most MAX_AGE seconds old."""
    try:
        at, _, report = path.read_text().strip().partition(" ")
        age = uptime() - int(at)
    except (OSError, ValueError):
        return False, "no report from the watchdog yet"
    if not 0 <= age <= MAX_AGE:
        return False, f"the watchdog's last report is {age} s old: {report}"
    return report == "ok", report
