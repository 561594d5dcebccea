"""The container's entrypoint (under tini): prepare the container (boot.prepare_container: every
setting checked, the token and CA bundle written), then, in the same process, supervisord (the pinned
one, in its own venv) with two additions; otherwise its own main loop. One Python start instead of two.

1. A program due to (re)start starts at once. supervisord 4 starts and restarts programs only after
   its main loop's poll(), which waits up to 1 s for I/O: the first start waited 1 s, and a crashed
   Jupyter or tmux server stayed down 0 to 1 s longer. Here, while a program is due to start (not yet
   started with autostart, or exited with autorestart=true after running for at least a second),
   poll() does not wait. A program that dies faster keeps supervisord's pace, so a crash loop cannot
   spin. And a signal wakes poll(): Python resumes a poll() that a signal interrupts (PEP 475), so
   supervisord saw a child's end (SIGCHLD) only at its next second, unless the child's output pipe
   closed first and the child was already reapable then: a Jupyter killed -9 came back a second late
   about half the time. Signals now write to a pipe that poll() watches (Python's set_wakeup_fd), so
   the end is seen at once; a SIGTERM (container stop) too.
2. The watchdog (watchdog.py) runs as a thread of this process.

supervisord's own imports load in a thread while the container is prepared (they are mostly cold
reads of the image's files): Jupyter is spawned ~0.1 s sooner.

    /opt/supervisor/bin/python -m persistent_notebooks.supervisor    (the image's ENTRYPOINT, under tini)
"""

import contextlib
import os
import signal
import sys
import threading
import time

from ..log import log
from ..paths import SUPERVISORD_CONF
from ..settings import SettingError
from .boot import prepare_container


def patched_supervisord():
    """supervisord's module, its Supervisor replaced by ours (imported only once the container is ready)."""
    from supervisor import supervisord
    from supervisor.datatypes import RestartUnconditionally
    from supervisor.states import ProcessStates

    from .watchdog import Watchdog

    class Supervisor(supervisord.Supervisor):
        """supervisord, with a program due to (re)start started at once, and the watchdog thread."""

        def start_due(self) -> bool:
            for group in self.process_groups.values():
                for process in group.processes.values():
                    config = process.config
                    if (process.state == ProcessStates.EXITED and config.autorestart is RestartUnconditionally
                            and time.time() - process.laststart >= 1):
                        return True
                    if process.state == ProcessStates.STOPPED and config.autostart and not process.laststart:
                        return True
            return False

        def runforever(self):
            poller, poll = self.options.poller, self.options.poller.poll
            wake, woken = os.pipe()  # written to by Python's C signal handler, for any signal supervisord handles
            os.set_blocking(wake, False)
            os.set_blocking(woken, False)
            signal.set_wakeup_fd(woken, warn_on_full_buffer=False)

            def poll_woken_by_signals(timeout: float) -> tuple[list, list]:
                poller.register_readable(wake)
                readable, writable = poll(0 if self.start_due() else timeout)
                if wake in readable:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(wake, 4096):
                            pass
                    readable = [fd for fd in readable if fd != wake]
                return readable, writable

            poller.poll = poll_woken_by_signals
            Watchdog(self).start()
            return super().runforever()

    supervisord.Supervisor = Supervisor  # supervisord.go() builds its Supervisor from this name
    return supervisord


def preload() -> None:
    """supervisord's own imports (xmlrpc, http.client, email, importlib.metadata: ~0.25 s, mostly cold
    reads of the image's files) while the container is prepared, instead of after."""
    import supervisor.rpcinterface  # noqa: F401
    import supervisor.supervisord  # noqa: F401


def main() -> int:
    loading = threading.Thread(target=preload, name="preload", daemon=True)
    loading.start()
    try:
        prepare_container()
    except SettingError as exc:
        log(f"error: {exc}")
        return 78  # EX_CONFIG
    loading.join()
    return patched_supervisord().main(["--nodaemon", "--configuration", SUPERVISORD_CONF, *sys.argv[1:]])


sys.exit(main())
