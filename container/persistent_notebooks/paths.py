"""The state volume (/var/lib/persistent-notebooks): where everything that outlives a process is
kept, who owns each record (creates it and removes it), and the kernel records.

Each record has one owner, which creates it and removes it (others only read it):
- jupyter_token (a generated token), run/token, ca-bundle.pem: the entrypoint (supervisor.boot);
- run/cookie-key: Jupyter's config (server.config);
- kernels/ID.json, one per kernel, with its connection file, and kernels/*.damaged (a damaged record
  set aside): the Jupyter server (server.kernels), which writes a record at launch and removes it at
  shutdown or when it finds the kernel dead (on adoption); read by the keeper, the runner, the CLI
  (state.kernels: KernelRecord);
- run/keeper.sock, keeper-pending/ID: the kernel keeper;
- runs/ID.json, run/runner.sock: the notebook runner (state.runs); read by the CLI;
- tmux-save/: the tmux saver (tmux); the pane texts of a rebuild: the session keeper, each removed by
  the pane that prints it;
- kernel-state/ID/ (a kernel's saved variables: persistent_notebooks.kernelstate): the kernel itself
  writes it; the Jupyter server makes it at launch and removes it when the kernel ends for good;
  kernel-state-key (signs every snapshot): the entrypoint; run/stopping (the container is stopping:
  kernels shut down now save their state): the keeper, removed by the entrypoint;
- jupyter/sessions.db: Jupyter (moved aside and rebuilt when damaged: server.sessions);
- envs/: `notebookctl env` (environments); read by Jupyter's kernel specs.

Not in the volume: the watchdog's health report (/dev/shm, state.health), new at each start.

Locations come from settings (STATE_DIR, WORKSPACE); this module reads no environment itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

from . import atomic
from .settings import STATE_DIR

log = logging.getLogger("persistent_notebooks")

RUN_DIR = STATE_DIR / "run"
KEEPER_SOCKET = RUN_DIR / "keeper.sock"
KEEPER_PENDING_DIR = RUN_DIR / "keeper-pending"  # a file per kernel while the keeper holds undelivered output
SERVER_TOKEN_FILE = RUN_DIR / "token"  # the token the server runs with (the entrypoint writes it)
GENERATED_TOKEN_FILE = STATE_DIR / "jupyter_token"  # a token generated once and kept
COOKIE_KEY_FILE = RUN_DIR / "cookie-key"
ENVS_DIR = STATE_DIR / "envs"
TMUX_SAVE_FILE = STATE_DIR / "tmux-save" / "session.json"
SESSIONS_DB = STATE_DIR / "jupyter" / "sessions.db"
# Server-side notebook runs: one record per run (owned by the runner), its socket, side files.
RUNS_DIR = STATE_DIR / "runs"
RUNNER_SOCKET = RUN_DIR / "runner.sock"
SUPERVISORD_CONF = "/etc/persistent-notebooks/supervisord.conf"
KERNEL_STATE_DIR = STATE_DIR / "kernel-state"
KERNEL_STATE_KEY_FILE = STATE_DIR / "kernel-state-key"
STOPPING_MARKER = RUN_DIR / "stopping"

# Raised for kernels (and so for what they start): the OOM killer picks a kernel before Jupyter,
# supervisord, the keeper or tmux. An unprivileged process may raise it for its children.
KERNEL_OOM_SCORE_ADJ = 800

def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str | bytes) -> None:
    """Write a file only its owner can read, atomically: whole (fsynced, then renamed into place) or not at all."""
    atomic.write(path, text, 0o600)


@contextlib.contextmanager
def replacing_lock(path: str | Path):
    """Held while a workspace file is replaced (Jupyter's saves, a run's writes): a run checks that the file
    is unchanged and renames its version over it under this lock, so a save Jupyter has acknowledged is
    never replaced by a run's older merge. An flock of the file's folder (held for a rename: microseconds),
    so a killed holder releases it and nothing is left behind."""
    fd = os.open(os.path.dirname(os.path.realpath(path)) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- processes -------------------------------------------------------------------------------

def process_start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), None if it is gone or a zombie.

    Kept with each kernel's pid, so that a recycled pid is never taken for the kernel.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):  # exited; tini reaps it
        return None
    return int(fields[19])


def container_instance() -> str:
    """This run of the container (the host's boot and the start of the container's init): a kernel record
    of another instance is of a kernel that the container's stop or crash ended."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "?"
    return f"{boot}/{process_start_time(1)}"

