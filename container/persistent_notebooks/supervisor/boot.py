"""The container's start, before supervisord: everything checked (preflight), the token and the CA bundle written,
the state volume's folders made private, and the environment supervisord hands on."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .. import atomic, paths, settings
from ..log import log
from ..preflight import STATE_DIR, WORKSPACE, check_all, resolve_token

HOST_CA_BUNDLE = Path("/run/secrets/ca_bundle")
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def build_ca_bundle() -> None:
    """Trust what the image trusts plus the bundle handed in as CA_BUNDLE (TLS-intercepting proxies)."""
    parts = [SYSTEM_CA_BUNDLE.read_text()] if SYSTEM_CA_BUNDLE.is_file() else []
    if HOST_CA_BUNDLE.is_file():
        parts.append(HOST_CA_BUNDLE.read_text())
    bundle = settings.ca_bundle()
    atomic.write(bundle, "\n".join(parts), 0o644, fsync=False)


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
