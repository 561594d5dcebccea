"""The named tmux session (see __main__ for the supervised programs), and the two helpers every program
of the container that talks to tmux or to the log shares: `tmux()` and `log()`."""

from __future__ import annotations

import subprocess
import sys


def log(message: str) -> None:
    print(f"persistent-notebooks: {message}", file=sys.stderr, flush=True)


def tmux(*args: str) -> subprocess.CompletedProcess:
    # -N: never start a server from here; only supervisord's `tmux -D` may own the socket.
    return subprocess.run(["tmux", "-N", *args], capture_output=True, text=True)
