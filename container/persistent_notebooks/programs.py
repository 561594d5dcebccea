"""Programs started on demand: supervisord is asked, through its XML-RPC interface on its private unix
socket (supervisord.conf's [unix_http_server]), to start one of its programs (stdlib only).

Two programs of supervisord.conf are not started with the container, so that an idle stack pays
nothing for them, and end by themselves when they have had nothing to do for a while: the kernel
keeper (started by the Jupyter server before it launches a kernel, and by the watchdog should a
running kernel find none) and the notebook runner (started by `notebookctl run`).
"""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client

SUPERVISOR_SOCKET = "/tmp/supervisor.sock"  # supervisord.conf's [unix_http_server] file (a unit test ties them)
KEEPER = "kernel-keeper"
RUNNER = "notebook-runner"
ON_DEMAND = (KEEPER, RUNNER)
# What a stopped on-demand program means (scripts/status says it beside supervisord's STOPPED or EXITED).
WHEN_IDLE = {KEEPER: "runs only while kernels do: none is running", RUNNER: "runs only while a run goes on: none is"}
ALREADY_STARTED = 60  # supervisor.xmlrpc.Faults.ALREADY_STARTED


class ProgramError(Exception):
    """supervisord could not be asked, or could not start the program."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self.socket_path, self.timeout = path, timeout

    def make_connection(self, host):
        # Kept where xmlrpc's Transport.close() finds it (the proxy's `with` closes it).
        if self._connection[1] is None:
            self._connection = host, _UnixConnection(self.socket_path, self.timeout)
        return self._connection[1]


def start(program: str, timeout: float = 10.0, path: str = SUPERVISOR_SOCKET) -> bool:
    """Ask supervisord to start `program`, without waiting for it to be up. True if it was started now,
    False if it was running already; ProgramError if it cannot be started (or supervisord asked)."""
    proxy = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(path, timeout))
    try:
        with proxy:  # closes the connection to supervisord's socket, whatever the answer
            proxy.supervisor.startProcess(program, False)
    except xmlrpc.client.Fault as fault:
        if fault.faultCode == ALREADY_STARTED:
            return False
        raise ProgramError(f"supervisord could not start {program}: {fault.faultString}") from None
    except (OSError, xmlrpc.client.ProtocolError) as exc:
        raise ProgramError(f"cannot ask supervisord to start {program}: {exc}") from None
    return True
