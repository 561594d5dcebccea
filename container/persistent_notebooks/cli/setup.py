"""Setting the container up, and the small commands of `notebookctl`:

  (the container's start: prepare_container, run by persistent_notebooks.supervisor before supervisord)
  check              (the one-shot `check` service, as root) hand a root-owned default ./workspace to the
                     notebook user, then check everything as that user: a bad setting fails `up -d`
  attach             attach to the named tmux session (VSCode's default terminal, scripts/attach)
  url, token         the URL to paste into VSCode's "Existing Jupyter Server", the token alone
  health             what the watchdog found last (Docker's healthcheck reads the same file)

Stdlib only, and nothing of the package but settings and paths, so that these start quickly.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path

from .. import paths, settings
from ..settings import NoTokenYet, SettingError
from ..tmux import LAB_WINDOW, lab_windows, log, tmux

HOST_CA_BUNDLE = Path("/run/secrets/ca_bundle")
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
STATE_DIR, WORKSPACE = settings.STATE_DIR, settings.WORKSPACE


def resolve_token(generate: bool = False) -> tuple[str, str]:
    """(token, where it came from), as settings.given_token finds it; or, for the entrypoint alone
    (generate=True), a new one kept in the state volume, so that every later reader sees the same."""
    try:
        return settings.given_token(paths.GENERATED_TOKEN_FILE)
    except NoTokenYet:
        if not generate:
            raise
    import secrets

    token = secrets.token_hex(24)
    paths.write_private(paths.GENERATED_TOKEN_FILE, token + "\n")
    log(f"generated a token and kept it in {paths.GENERATED_TOKEN_FILE} (volume 'state')")
    return token, "generated"


def check_writable(path: Path, what: str, fix: str) -> None:
    import errno

    if not path.is_dir():
        raise SettingError(f"{what} {path} is missing. {fix}")
    probe = path / f".persistent-notebooks-write-test-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        st = path.stat()
        if exc.errno == errno.EROFS:
            raise SettingError(f"{what} {path} is mounted read-only. Mount it read-write (no ':ro' or "
                               "read_only in a compose override).") from None
        if st.st_uid == os.getuid():
            raise SettingError(
                f"{what} {path} belongs to the notebook user (uid {st.st_uid}) but its mode "
                f"{st.st_mode & 0o777:o} does not let it write. Run `chmod u+rwx FOLDER` on the host "
                f"folder.") from None
        raise SettingError(
            f"{what} {path} is not writable by the notebook user (uid {os.getuid()}, gid "
            f"{os.getgid()}); it belongs to uid {st.st_uid}, gid {st.st_gid} ({exc.strerror}). "
            f"{fix}"
        ) from None


def build_ca_bundle() -> None:
    """Trust what the image trusts plus the bundle handed in as CA_BUNDLE (TLS-intercepting proxies)."""
    parts = [SYSTEM_CA_BUNDLE.read_text()] if SYSTEM_CA_BUNDLE.is_file() else []
    if HOST_CA_BUNDLE.is_file():
        parts.append(HOST_CA_BUNDLE.read_text())
    bundle = settings.ca_bundle()
    tmp = bundle.with_name(f".{bundle.name}.tmp")
    tmp.write_text("\n".join(parts))
    os.replace(tmp, bundle)


# --- commands -------------------------------------------------------------------------------


STATE_FIX = ("It was made for another HOST_UID: set HOST_UID/HOST_GID in .env back to the uid that "
             "made it, or move the token out and recreate the volume (`docker compose down -v`).")


def workspace_fix() -> str:
    return (f"Make the host folder (WORKSPACE in .env, default ./workspace) belong to uid "
            f"{os.getuid()} (`sudo chown {os.getuid()}:{os.getgid()} FOLDER`), or set HOST_UID and "
            "HOST_GID in .env to its owner (`id -u`, `id -g`) and run `docker compose up -d --build`.")


def check_all() -> str:
    """Everything the service needs, checked as the notebook user; returns the session name."""
    if os.getuid() == 0:
        raise SettingError("The container runs as root. Remove any `user:` override: it runs as 'notebook'.")
    check_writable(STATE_DIR, "The state volume", STATE_FIX)
    check_writable(WORKSPACE, "The workspace", workspace_fix())
    return settings.check_all()


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


def prepare_container() -> None:
    """The container's start (supervisord's process runs this before supervisord itself): check
    everything, write the token and the CA bundle, and leave the environment supervisord hands on."""
    name = check_all()
    # Under a hub, the server's API token from the hub is what the CLI, the runner and the watchdog
    # present to it (it may use its own server's API); the hub's login replaces the fixed token.
    token, source = (settings.hub_token(), "JupyterHub") if settings.hub_mode() else resolve_token(generate=True)
    # Private: the token, kernels' connection files and keys, the tmux save, sessions, history.
    STATE_DIR.chmod(0o700)
    for sub in ("jupyter/data", "jupyter/runtime", "jupyter/config", "ipython", "python", "tmux", "run",
                "kernels", "kernel-state"):
        (STATE_DIR / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("tmux", "run", "kernels", "jupyter/runtime", "kernel-state"):
        (STATE_DIR / sub).chmod(0o700)
    paths.write_private(paths.SERVER_TOKEN_FILE, token + "\n")
    if not paths.KERNEL_STATE_KEY_FILE.is_file():  # signs every kernel snapshot: only ours are loaded
        paths.write_private(paths.KERNEL_STATE_KEY_FILE, secrets.token_hex(32) + "\n")
    paths.STOPPING_MARKER.unlink(missing_ok=True)  # left by the last stop
    build_ca_bundle()
    log(f"tmux session {name!r}, token from {source}, workspace {WORKSPACE}, starting supervisord")
    # Nothing supervisord starts (Jupyter, kernels, tmux shells) inherits the token.
    for variable in settings.TOKEN_VARIABLES + settings.HUB_TOKEN_VARIABLES:
        os.environ.pop(variable, None)
    # As read here, for supervisord.conf's %(ENV_...)s (Jupyter's command line) and the tmux programs.
    os.environ.update(NOTEBOOK_PORT=str(settings.port()), TMUX_SESSION=name, NOTEBOOK_SERVER=settings.server_command())


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
    from ..supervisor.health import read_health

    healthy, text = read_health()
    print(text)
    return 0 if healthy else 1
