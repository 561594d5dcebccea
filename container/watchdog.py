"""supervisord event listener: heal a hung Jupyter server or kernel keeper, hand a FATAL program to Docker.

supervisord restarts a program that exits, but not one that hangs (kill -STOP, a deadlock): it stays
RUNNING while dead to its clients. On every TICK_5 this probes Jupyter's /api/status (with the token
from the server's own runtime file) and the kernel keeper's socket; after FAILURES failed probes in a
row it kills the program with SIGKILL, and supervisord starts a new one: a new server adopts the
running kernels, a new keeper follows them again.

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
KEEPER_SOCKET = os.path.join(os.environ.get("NOTEBOOK_STATE_DIR", "/var/lib/persistent-notebooks"), "run",
                             "keeper.sock")


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


def probe_keeper() -> str | None:
    """None if the kernel keeper answers a status request on its socket, else what went wrong."""
    import socket
    import struct

    request = json.dumps({"op": "status", "id": 1}).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(PROBE_TIMEOUT)
            sock.connect(KEEPER_SOCKET)
            sock.sendall(struct.pack("!I", len(request)) + request)
            if len(sock.recv(4)) != 4:
                return "closed the connection"
    except OSError as exc:
        return str(exc) or type(exc).__name__
    return None


class Watched:
    """One supervised program probed on every tick: killed after FAILURES failed probes in a row."""

    def __init__(self, program: str, what: str, probe) -> None:
        self.program, self.what, self.probe = program, what, probe
        self.failed, self.pid = 0, None

    def tick(self, rpc) -> None:
        info = rpc.supervisor.getProcessInfo(self.program)
        # Only a program that is RUNNING (past startsecs) is probed; a starting one is left alone.
        if info["statename"] != "RUNNING":
            self.failed, self.pid = 0, None
            return
        pid = info["pid"]
        if pid != self.pid:
            self.failed, self.pid = 0, pid
        problem = self.probe(pid)
        self.failed = 0 if problem is None else self.failed + 1
        if problem is not None:
            log(f"{self.what} (pid {pid}) did not answer ({self.failed}/{FAILURES}): {problem}")
        if self.failed >= FAILURES:
            log(f"{self.what} (pid {pid}) hangs: killing it; supervisord starts a new one")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.failed = 0


def main() -> int:
    rpc = childutils.getRPCInterface(os.environ)
    # A new Jupyter adopts the running kernels; a new keeper follows them again.
    watched = [Watched("jupyter", "Jupyter", probe), Watched("kernel-keeper", "the kernel keeper",
                                                            lambda pid: probe_keeper())]
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
            for program in watched:
                program.tick(rpc)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
