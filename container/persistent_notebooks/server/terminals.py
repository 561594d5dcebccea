"""JupyterLab's terminals as windows of the named tmux session: terminal NAME is the window lab-NAME, so
what runs in it outlives Jupyter (a crash, a restart) and a terminal reopened in the browser shows it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from pathlib import Path

from jupyter_server_terminals.terminalmanager import TerminalManager
from tornado import web

from .. import settings
from ..tmuxctl import lab_windows, tmux

NAME = re.compile(r"\w{1,40}", re.ASCII)


class TmuxTerminalManager(TerminalManager):
    """Terminals whose shells live in tmux: made by `notebookctl terminal`, found again, ended by Shut Down."""

    _stopping = False

    def new_named_terminal(self, **kwargs):
        """Called by create() (POST /api/terminals, JupyterLab passing the name when it restores a terminal):
        the terminal's command (`notebookctl terminal`) learns its name from PN_TERMINAL."""
        name = kwargs.get("name") or self._next_available_name()
        if not NAME.fullmatch(str(name)):
            raise web.HTTPError(400, f"terminal name {name!r}: use up to 40 letters, digits or _")
        env = {**(kwargs.get("extra_env") or {}), "PN_TERMINAL": name}
        return super().new_named_terminal(**{**kwargs, "name": name, "extra_env": env})

    def list(self):
        """Called for GET /api/terminals (JupyterLab polls it): the session's lab windows that have no terminal
        here (after Jupyter restarted) become terminals again, so an open page reconnects to them."""
        for name in lab_windows(settings.session_name()):
            if name not in self.terminals and NAME.fullmatch(name):
                self.create(name=name)
        return super().list()

    async def terminate(self, name: str, force: bool = False) -> None:
        """Called for DELETE /api/terminals/NAME (JupyterLab's Shut Down): the window ends too, and what its
        shell started (a hang-up to each process of the pane's session, as closing a terminal sends: jobs in
        the background included, nohup's not). When Jupyter itself stops (terminate_all) only the views go."""
        await super().terminate(name, force=force)
        if not self._stopping:
            window = lab_windows(settings.session_name()).get(name)
            if window:
                panes = tmux("list-panes", "-t", window, "-F", "#{pane_pid}").stdout.split()
                tmux("kill-window", "-t", window)
                for pane in panes:
                    hang_up_session(int(pane))

    async def terminate_all(self) -> None:
        self._stopping = True
        await super().terminate_all()


def hang_up_session(session: int) -> None:
    """SIGHUP to every process of this session (a pane's shell leads one; its jobs stay in it)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session:
                os.kill(int(entry.name), signal.SIGHUP)

