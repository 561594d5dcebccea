"""Setting the container up, and the small commands of `notebookctl`:

  check              (the one-shot `check` service, as root) hand a root-owned default ./workspace to the
                     notebook user, then check everything as that user: a bad setting fails `up -d`
  attach             attach to the named tmux session (VSCode's default terminal, scripts/attach)
  url, token         the URL to paste into VSCode's "Existing Jupyter Server", the token alone
  health             what the watchdog found last (Docker's healthcheck reads the same file)

Stdlib only, and nothing of the package but its shared layers, so that these start quickly.
"""

from __future__ import annotations

import os
import sys
import time

from .. import paths, settings
from ..log import log
from ..preflight import check_all, resolve_token
from ..settings import NoTokenYet
from ..tmuxctl import LAB_WINDOW, lab_windows, tmux

WORKSPACE = settings.WORKSPACE


# --- commands -------------------------------------------------------------------------------


def cmd_check(argv: list[str]) -> int:
    """One-shot before the service (compose's `check`): hand over a root-owned default workspace,
    then check every setting as the notebook user, so that a bad one fails `docker compose up -d`."""
    import pwd

    if os.getuid() == 0:
        cmd_prepare_workspace([])
        user = pwd.getpwnam("notebook")
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    check_all()
    # The token source the service will use, as the notebook user: present, readable, a regular file
    # of a sane size, a usable token. (No source yet is fine: the service generates one.)
    try:
        resolve_token()
    except NoTokenYet:
        pass
    log("settings checked")
    return 0


def cmd_prepare_workspace(argv: list[str]) -> int:
    """One-shot, as root with only CAP_CHOWN: hand a root-owned default workspace to the notebook user.

    A checkout made by root (or a folder Docker made) is root-owned; this does the `chown` a user
    would otherwise type. Only the top folder, and only the default ./workspace: a WORKSPACE the
    user named is never touched (the entrypoint explains what to do instead).
    """
    import pwd

    user = pwd.getpwnam("notebook")
    st = WORKSPACE.stat()
    if settings.workspace_is_custom() or st.st_uid != 0 or user.pw_uid == 0:
        return 0
    os.chown(WORKSPACE, user.pw_uid, user.pw_gid)
    log(f"the default workspace was owned by root; handed it to uid {user.pw_uid}, gid {user.pw_gid}")
    return 0


def wait_for_session(name: str, timeout: float) -> bool:
    """Wait until the tmux server answers and the session exists (supervisord's keep-session makes it)."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while tmux("has-session", "-t", f"={name}").returncode != 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    return True


def cmd_attach(argv: list[str]) -> int:
    name = settings.session_name()
    if not wait_for_session(name, timeout=15):
        log(f"tmux session {name!r} is not there yet; check `docker compose logs notebooks`. "
            "Starting a plain shell instead.")
        os.execvp("bash", ["bash", "-l"])
    os.execvp("tmux", ["tmux", "-N", "attach-session", "-t", f"={name}", *argv])


def cmd_terminal(argv: list[str]) -> int:
    """A JupyterLab terminal (the Jupyter server's terminal command; PN_TERMINAL names it): its window of the
    named session, lab-NAME, made here in this folder if missing, shown through a view of its own (a session
    grouped with the named one, gone with this client), so it neither moves VSCode's view nor dies with Jupyter.
    The window's shell ending closes the browser's terminal."""
    name = settings.session_name()
    if not wait_for_session(name, timeout=15):
        log(f"tmux session {name!r} is not there yet; check `docker compose logs notebooks`. "
            "Starting a plain shell instead (it ends with Jupyter).")
        os.execvp("bash", ["bash", "-l"])
    terminal = os.environ.get("PN_TERMINAL") or str(os.getpid())
    view = f"{name}-{LAB_WINDOW}{terminal}"
    window = lab_windows(name).get(terminal)
    if window is None:
        import shlex

        made = tmux("new-window", "-d", "-P", "-F", "#{window_id}", "-t", f"={name}:", "-n", LAB_WINDOW + terminal,
                    "-c", os.getcwd(), f"bash -l; tmux detach-client -s {shlex.quote('=' + view)} 2>/dev/null")
        window = made.stdout.strip()
    tmux("kill-session", "-t", f"={view}")  # a view left by a client that died with its server
    os.execvp("tmux", ["tmux", "-N", "new-session", "-t", f"={name}", "-s", view, ";",
                       "set-option", "destroy-unattached", "on", ";", "select-window", "-t", f"={view}:{window}"])


def server_token() -> str:
    """The token the server runs with (the entrypoint wrote it); before that, the configured one."""
    if paths.SERVER_TOKEN_FILE.is_file():
        return paths.SERVER_TOKEN_FILE.read_text().strip()
    return resolve_token()[0]


def cmd_token(argv: list[str]) -> int:
    print(server_token())
    return 0


def cmd_url(argv: list[str]) -> int:
    """The URL, valid on the workstation and inside the container alike (the same port both sides)."""
    import urllib.parse

    if settings.hub_mode():
        print("This server is a JupyterHub user's: open the hub's URL and log in (scripts/hub url NAME on the "
              "workstation).", file=sys.stderr)
        return 1
    token = server_token()
    print(f"http://127.0.0.1:{settings.port()}/?token={urllib.parse.quote(token, safe='')}")
    return 0


def cmd_health(argv: list[str]) -> int:
    """What the watchdog found on its last round: 'ok', or each problem; exit 1 unless ok and recent."""
    from ..state.health import read_health

    healthy, text = read_health()
    print(text)
    return 0 if healthy else 1
