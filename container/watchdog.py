"""supervisord event listener: heal a hung Jupyter server, and hand a FATAL program to Docker.

supervisord restarts a program that exits, but not one that hangs (kill -STOP, a deadlock): it stays
RUNNING while its API is dead. On every TICK_5 this probes Jupyter's /api/status (with the token from
the server's own runtime file); after FAILURES failed probes in a row it kills the server with
SIGKILL, and supervisord starts a new one, which adopts the running kernels.

A program that reaches FATAL (it could not be started startretries times) would leave the container
running but broken, "unhealthy" forever: Docker does nothing about that. So on PROCESS_STATE_FATAL
this shuts supervisord down; the container exits and Docker's restart policy starts it afresh.

Runs with supervisord's own Python (supervisor.childutils speaks the listener protocol).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request

from supervisor import childutils

FAILURES = 3
# Programs started on demand: one that cannot start breaks one request, not the container.
ON_DEMAND = ("notebook-runner",)
PROBE_TIMEOUT = 4
RUNTIME_DIR = os.environ.get("JUPYTER_RUNTIME_DIR", "/var/lib/persistent-notebooks/jupyter/runtime")


def log(message: str) -> None:
    print(f"watchdog: {message}", file=sys.stderr, flush=True)


def probe(pid: int) -> str | None:
    """None if the server with this pid answers /api/status with 200, else what went wrong."""
    try:
        with open(os.path.join(RUNTIME_DIR, f"jpserver-{pid}.json")) as f:
            info = json.load(f)
    except (OSError, ValueError) as exc:
        return f"no runtime file ({exc})"
    request = urllib.request.Request(f"http://127.0.0.1:{info['port']}/api/status",
                                     headers={"Authorization": f"token {info['token']}"})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT) as response:
            return None if response.status == 200 else f"answered {response.status}"
    except OSError as exc:
        return str(exc)


def main() -> int:
    rpc = childutils.getRPCInterface(os.environ)
    failed, watched = 0, None
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        event = headers["eventname"]
        if event == "PROCESS_STATE_FATAL":
            name = childutils.get_headers(payload.split("\n", 1)[0]).get("processname", "?")
            if name in ON_DEMAND:
                log(f"program {name!r} could not be started; the next request starts it again")
                childutils.listener.ok(sys.stdout)
                continue
            log(f"program {name!r} is FATAL (it could not be started): stopping supervisord so that "
                "Docker's restart policy restarts the container")
            childutils.listener.ok(sys.stdout)
            rpc.supervisor.shutdown()
            continue
        if event.startswith("TICK"):
            info = rpc.supervisor.getProcessInfo("jupyter")
            # Only a server that is RUNNING (past startsecs) is probed; a starting one is left alone.
            if info["statename"] != "RUNNING":
                failed, watched = 0, None
            else:
                pid = info["pid"]
                if pid != watched:
                    failed, watched = 0, pid
                problem = probe(pid)
                failed = 0 if problem is None else failed + 1
                if problem is not None:
                    log(f"Jupyter (pid {pid}) did not answer ({failed}/{FAILURES}): {problem}")
                if failed >= FAILURES:
                    log(f"Jupyter (pid {pid}) hangs: killing it; supervisord starts a new server, which "
                        "adopts the running kernels")
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    failed = 0
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
