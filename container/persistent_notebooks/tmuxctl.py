"""tmux as every program of the container asks it (the session keeper and saver in tmux/, `notebookctl terminal`,
JupyterLab's terminals in server/): never starting a server of its own, and the browser terminals' windows."""

from __future__ import annotations

import subprocess


def tmux(*args: str) -> subprocess.CompletedProcess:
    # -N: never start a server from here; only supervisord's `tmux -D` may own the socket.
    return subprocess.run(["tmux", "-N", *args], capture_output=True, text=True)


# Browser terminals (server/terminals.py, `notebookctl terminal`): JupyterLab's terminal NAME is the
# window lab-NAME of the named session.
LAB_WINDOW = "lab-"


def lab_windows(session: str) -> dict[str, str]:
    """{terminal name: tmux window id} of the session's browser-terminal windows."""
    listing = tmux("list-windows", "-t", f"={session}", "-F", "#{window_name}\t#{window_id}")
    windows = {}
    for line in listing.stdout.splitlines() if listing.returncode == 0 else []:
        name, _, window_id = line.partition("\t")
        if name.startswith(LAB_WINDOW) and name[len(LAB_WINDOW):]:
            windows[name[len(LAB_WINDOW):]] = window_id
    return windows
