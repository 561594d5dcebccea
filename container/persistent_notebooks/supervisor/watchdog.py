"""The watchdog, inside supervisord's own process: heals a hung Jupyter, kernel keeper or notebook runner,
starts again any program stopped by hand, hands a FATAL program to Docker, and writes the health report
Docker's healthcheck reads.

supervisord restarts a program that exits, but not one that hangs (kill -STOP, a deadlock): it stays
RUNNING while dead to its clients. A thread of supervisord probes Jupyter's /api/status (with the
server's token), the kernel keeper's socket and the runner's every INTERVAL seconds (every second while
something is wrong); a program that has failed its probes for HANG_AFTER seconds (and at least FAILURES
times) is killed with SIGKILL, and supervisord starts a new one: a new server adopts the running kernels,
a new keeper follows them again, a new runner marks the hung one's runs interrupted. Only a RUNNING
program (past its startsecs) is ever killed. The keeper and the runner run only while kernels or runs do
(programs.py): should one be missing while it is needed, the watchdog starts it.

A program that should always run (autostart) and was stopped by hand (`supervisorctl stop jupyter`, from
a terminal or a cell: Docker does nothing about an unhealthy container) is started again once it has been
STOPPED for HEAL_STOPPED_AFTER seconds: `supervisorctl restart` (a stop and a start) is not disturbed.

A program that reaches FATAL (it could not be started startretries times) would leave the container
running but broken, "unhealthy" forever: Docker does nothing about that. So on PROCESS_STATE_FATAL
supervisord shuts down; the container exits and Docker's restart policy starts it afresh. Not for a
program started on demand: its next start is tried again (a restart would end every kernel).

Being a thread of supervisord (not an event listener of its own) costs no resident Python process and
no listener protocol; it reads supervisord's process table directly (see tests/test_patches.py).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from supervisor import events
from supervisor.states import ProcessStates, SupervisorStates, getProcessStateDescription

from .. import ipc, paths, programs, settings
from ..state import kernels as records
from ..state.health import write_health
from ..state.runs import ACTIVE, all_runs, pending_outputs

INTERVAL = 5.0  # seconds between probes while all is well
RETRY = 1.0  # ... while something is wrong (so health comes back quickly)
PROBE_TIMEOUT = 4.0
FAILURES = 3
HANG_AFTER = 10.0  # seconds of failed probes, at least FAILURES of them, before a program is killed
HEAL_STOPPED_AFTER = 10.0  # seconds an always-on program may stay STOPPED (by hand) before it is started again
# Programs started on demand (programs.py): one that cannot start breaks one request, not the container.
ON_DEMAND = programs.ON_DEMAND


def log(message: str) -> None:
    print(f"watchdog: {message}", file=sys.stderr, flush=True)


def probe_jupyter() -> str | None:
    """None if Jupyter answers GET /api/status with 200 (with the server's token), else what went wrong.
    Under a hub, GET /user/NAME/api (its version, no login): the hub checks tokens, and a hub being
    restarted must not make a healthy server look hung. Then its sessions (not under a hub): the sessions
    database, which Jupyter opens once, damaged while it runs fails every session request until a new
    server repairs it at start (server.sessions), so that counts as a hang too."""
    try:
        if settings.hub_mode():
            return _status(f"GET {settings.base_url()}api HTTP/1.0\r\n")
        auth = f"Authorization: token {paths.SERVER_TOKEN_FILE.read_text().strip()}\r\n"
        problem = _status(f"GET /api/status HTTP/1.0\r\n{auth}")
        if problem is None and (problem := _status(f"GET /api/sessions HTTP/1.0\r\n{auth}")):
            problem = f"its sessions (the sessions database) {problem}"
        return problem
    except (OSError, ValueError, settings.SettingError) as exc:
        return str(exc) or type(exc).__name__


def _status(request: str) -> str | None:
    """None if Jupyter answers the request with 200, else what it answered."""
    with socket.create_connection(("127.0.0.1", settings.port()), timeout=PROBE_TIMEOUT) as sock:
        sock.sendall(f"{request}Host: 127.0.0.1:{settings.port()}\r\n\r\n".encode())
        status_line = sock.makefile("rb").readline(200).decode("latin-1").strip()
    parts = status_line.split()
    if len(parts) < 2 or parts[1] != "200":
        return f"answered {status_line or 'nothing'!r}"
    return None


def probe_keeper() -> str | None:
    """None if the kernel keeper answers a status request on its socket, else what went wrong."""
    try:
        ipc.request_sync(paths.KEEPER_SOCKET, {"op": "status"}, PROBE_TIMEOUT)
    except (OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    return None


def probe_runner() -> str | None:
    """None if the notebook runner answers a ping on its socket, else what went wrong."""
    try:
        ipc.request_sync(paths.RUNNER_SOCKET, {"op": "ping"}, PROBE_TIMEOUT)
    except (OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    return None


def runs_active() -> int:
    """Runs going on, and outputs kept for a notebook that could not take them (the runner writes them on)."""
    return len([r for r in all_runs() if r.state in ACTIVE]) + len(pending_outputs())


def session_attached(pid: int) -> bool:
    """The tmux-session program has become the session's control-mode client: the session exists."""
    try:
        return b"attach-session" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def kernels_running() -> int:
    return len(records.live())


class Watched:
    """One supervised program probed on every round: killed once it has failed long enough in a row.
    One started on demand (`needed`: how many things need it now) is fine when it is not running and
    nothing needs it; when something does, the watchdog starts it."""

    def __init__(self, program: str, what: str, probe, needed=None, socket_path: Path | None = None) -> None:
        self.program, self.what, self.probe, self.needed = program, what, probe, needed
        self.socket_path = socket_path  # an on-demand program's: it removes it as it exits by itself
        self.pid: int | None = None
        self.failures, self.failing_since = 0, 0.0

    def reset(self, pid: int | None = None) -> None:
        self.pid, self.failures, self.failing_since = pid, 0, 0.0

    def check(self, process) -> str | None:
        """What is wrong with the program now (None: nothing); kills it once it hangs."""
        if process is None:
            return f"{self.what}: no such program"
        if process.state == ProcessStates.STARTING:
            # Not past its startsecs yet: it may already answer (health comes sooner), but a failure
            # counts for nothing.
            self.reset()
            return None if self.probe() is None else f"{self.what} is starting"
        if process.state != ProcessStates.RUNNING:
            self.reset()
            needed = self.needed() if self.needed is not None else None
            if needed == 0:
                return None  # ended by itself with nothing to do, or not started yet
            if needed and process.state in (ProcessStates.STOPPED, ProcessStates.EXITED):
                log(f"{self.what} is not running while {needed} kernel(s) run: starting it")
                try:
                    programs.start(self.program)
                except programs.ProgramError as exc:
                    log(str(exc))
            return f"{self.what} is {getProcessStateDescription(process.state)}"
        pid = process.pid
        if pid != self.pid:
            self.reset(pid)
        problem = self.probe()
        if problem is None:
            self.reset(pid)
            return None
        now = time.monotonic()
        self.failures += 1
        self.failing_since = self.failing_since or now
        if self.socket_path is not None and not self.socket_path.exists() and now - self.failing_since < HANG_AFTER:
            return None  # exiting by itself (idle): its socket is gone, the process follows within seconds
        log(f"{self.what} (pid {pid}) did not answer ({self.failures}): {problem}")
        if self.failures >= FAILURES and now - self.failing_since >= HANG_AFTER and process.pid == pid:
            log(f"{self.what} (pid {pid}) hangs: killing it; supervisord starts a new one")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.reset()
        return f"{self.what} does not answer: {problem}"


class Watchdog:
    """A thread of supervisord's: heals programs stopped, hung or failed, and writes the health report."""

    def __init__(self, supervisord) -> None:
        self.supervisord = supervisord
        self.watched = [Watched("jupyter", "Jupyter", probe_jupyter),
                        Watched(programs.KEEPER, "the kernel keeper", probe_keeper, needed=kernels_running,
                                socket_path=paths.KEEPER_SOCKET),
                        Watched(programs.RUNNER, "the notebook runner", probe_runner, needed=runs_active,
                                socket_path=paths.RUNNER_SOCKET)]
        self.wake = threading.Event()
        self.stopped_since: dict[str, float] = {}

    def start(self) -> None:
        events.subscribe(events.ProcessStateFatalEvent, self.on_fatal)
        threading.Thread(target=self.run, name="watchdog", daemon=True).start()

    # --- in supervisord's main loop ------------------------------------------------------------------

    def on_fatal(self, event) -> None:
        name = event.process.config.name
        if name in ON_DEMAND:
            log(f"program {name!r} could not be started; the next request starts it again")
            return
        log(f"program {name!r} is FATAL (it could not be started): stopping supervisord so that Docker's "
            "restart policy restarts the container")
        self.supervisord.options.mood = SupervisorStates.SHUTDOWN

    # --- in the watchdog's thread --------------------------------------------------------------------

    def process(self, name: str):
        for group in list(self.supervisord.process_groups.values()):
            process = group.processes.get(name)
            if process is not None:
                return process
        return None

    def restart_stopped(self) -> None:
        """Start again every always-on program that has been STOPPED (by hand) for HEAL_STOPPED_AFTER seconds."""
        now = time.monotonic()
        for group in list(self.supervisord.process_groups.values()):
            for name, process in list(group.processes.items()):
                if not process.config.autostart or process.state != ProcessStates.STOPPED:
                    self.stopped_since.pop(name, None)
                    continue
                since = self.stopped_since.setdefault(name, now)
                if now - since >= HEAL_STOPPED_AFTER:
                    log(f"{name} was stopped (by hand?) {now - since:.0f} s ago: starting it again "
                        "(`supervisorctl restart` restarts a program on purpose)")
                    self.stopped_since.pop(name, None)
                    try:
                        programs.start(name)
                    except programs.ProgramError as exc:
                        log(str(exc))

    def round(self) -> list[str]:
        self.restart_stopped()
        problems = [p for w in self.watched if (p := w.check(self.process(w.program)))]
        tmux = self.process("tmux-session")
        if tmux is None or tmux.state != ProcessStates.RUNNING or not session_attached(tmux.pid):
            problems.append(f"tmux session {settings.session_name()!r} is not there (yet)")
        return problems

    def run(self) -> None:
        while True:
            if self.supervisord.options.mood < SupervisorStates.RUNNING:
                return  # stopping: nothing to heal, nothing healthy to report
            try:
                problems = self.round()
            except Exception as exc:  # noqa: BLE001 - the watchdog must not die; say what happened
                problems = [f"the watchdog failed: {exc!r}"]
                log(problems[0])
            try:
                write_health("; ".join(problems) or "ok")
            except OSError as exc:
                log(f"cannot write the health report: {exc}")
            self.wake.wait(RETRY if problems else INTERVAL)
