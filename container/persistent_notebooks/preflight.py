"""What must hold before the container's programs start, checked in one place: by the one-shot `check` service (so
that a bad setting fails `docker compose up -d`) and again by the entrypoint (supervisor/boot.py) as the notebook user.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import paths, settings
from .log import log
from .settings import NoTokenYet, SettingError

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
