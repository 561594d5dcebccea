"""Every setting of persistent-notebooks: the one place that reads the environment and validates it.

Each function reads its variable when called and returns the value as the programs use it, or raises
SettingError with a message that names the variable and the fix. `check_all()` runs them all: the
one-shot `check` service and the entrypoint call it, so a bad value fails `docker compose up -d`;
after that every program (the Jupyter server's config, the kernel keeper, the tmux programs, the
CLI) reads its values here too, so no value can mean two things in two places.

Stdlib only: supervisord's own Python imports this too.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Where things are in the container (set by the image, not by users; tests of the unit layer point
# them elsewhere).
STATE_DIR = Path(os.environ.get("NOTEBOOK_STATE_DIR", "/var/lib/persistent-notebooks"))
WORKSPACE = Path(os.environ.get("NOTEBOOK_WORKSPACE", "/workspace"))
DOCKER_SECRET_TOKEN_FILE = Path("/run/secrets/jupyter_token")

DEFAULT_PORT = 8888
# The tmux session's name unless TMUX_SESSION says otherwise: the one place for this default.
DEFAULT_SESSION = "persistent-notebooks"
DEFAULT_AWAY_BUFFER = "32m"
DEFAULT_CULL_INTERVAL = 300
DEFAULT_STATE_LIMIT = "8g"
DEFAULT_STATE_FLOOR = "2g"
MIN_TOKEN_LENGTH = 16
# Past this, every request carrying the token would meet the server's header-size limit.
MAX_TOKEN_LENGTH = 512
# NOTEBOOK_MEMORY_LIMIT below this cannot hold the stack (Jupyter, supervisord, the keeper and tmux
# take about 150 MiB) and a kernel: the container would restart in a loop instead of starting.
MIN_MEMORY_LIMIT = 256 * 2**20
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
# A size as Docker reads one (mem_limit): 512, 32m, 1.5g, 16GiB, 2 t.
_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([kmgt]?)(?:i?b)?", re.I)
_DURATION = re.compile(r"(\d+(?:\.\d+)?) ?([smhdw]?)", re.I)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class SettingError(Exception):
    """A setting the user must change; the message says how."""


class NoTokenYet(SettingError):
    """No token was given and none was generated yet (the service's entrypoint makes one)."""


def _get(name: str) -> str | None:
    return os.environ.get(name)


# --- value parsers (pure) ---------------------------------------------------------------------------

def parse_size(text: str, name: str) -> int:
    """'32m', '32MiB', '1.5g', '65536' -> bytes; SettingError naming the variable otherwise."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise SettingError(f"{name}={text!r} is not a size. Set {name} in .env to a number of bytes or a number "
                           "with k, m, g or t (e.g. 32m, 16g).")
    return int(float(match.group(1)) * 1024 ** " kmgt".index(match.group(2).lower() or " "))


def parse_duration(text: str, what: str = "--idle-for") -> float:
    """'90', '90s', '2d', '1.5h' -> seconds (s, m, h, d, w)."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise SettingError(f"{what} {text!r} is not a duration: use a number with s, m, h, d or w (e.g. 2d, 90m).")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]


def parse_boolean(text: str, name: str) -> bool:
    value = text.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise SettingError(f"{name}={text!r} is not true or false. Set {name} in .env to true or false.")


def _boolean(name: str, default: bool) -> bool:
    value = (_get(name) or "").strip()
    return parse_boolean(value, name) if value else default


def _seconds(name: str, default: int, minimum: int = 0) -> int:
    value = (_get(name) or "").strip() or str(default)
    if not (value.isascii() and value.isdigit()) or int(value) < minimum:  # ("²".isdigit() holds)
        raise SettingError(f"{name}={value!r} is not a whole number of seconds >= {minimum}. Set {name} in "
                           f".env to e.g. {max(default, minimum) or 3600} (no units), or remove it.")
    return int(value)


# --- the settings ----------------------------------------------------------------------------------

def port() -> int:
    """NOTEBOOK_PORT: Jupyter listens on the same port inside as compose publishes on the host.
    Under JupyterHub: the port of the URL the spawner gave (JUPYTERHUB_SERVICE_URL)."""
    if hub_mode():
        return hub_service_url()[1]
    value = (_get("NOTEBOOK_PORT") or "").strip() or str(DEFAULT_PORT)
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 65535:
        raise SettingError(f"NOTEBOOK_PORT={value!r} is not a port number. Set NOTEBOOK_PORT in .env to e.g. 8890.")
    return int(value)


def session_name() -> str:
    """TMUX_SESSION, refused if tmux could not use it as given.

    Unset (compose passes the bare name, which Docker turns into no variable at all): the one
    default, DEFAULT_SESSION. Set but empty (TMUX_SESSION= in .env): refused.
    """
    name = _get("TMUX_SESSION")
    if name is None:
        return DEFAULT_SESSION
    if not name.strip():
        raise SettingError("TMUX_SESSION is empty. Set TMUX_SESSION in .env to a name such as "
                           "'persistent-notebooks', or remove the line to use the default.")
    bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "-_@+%,"))})
    if bad:
        suggestion = "".join("-" if c in bad else c for c in name).strip("-") or DEFAULT_SESSION
        raise SettingError(
            f"TMUX_SESSION={name!r} contains {''.join(bad)!r}, which tmux does not take as given in a "
            "session name (':' and '.' separate window and pane, '#' and '$' are expanded, spaces "
            "break the terminal profile). Use letters, digits and - _ @ + % , only. "
            f"Change TMUX_SESSION in .env, e.g. to {suggestion!r}.")
    return name


def tmux_restore() -> bool:
    """TMUX_RESTORE: save the tmux session and rebuild it after a restart."""
    return _boolean("TMUX_RESTORE", True)


def away_buffer() -> int:
    """NOTEBOOK_AWAY_BUFFER: bytes of output kept per kernel while no client is connected (0: off)."""
    value = (_get("NOTEBOOK_AWAY_BUFFER") or "").strip() or DEFAULT_AWAY_BUFFER
    try:
        return parse_size(value, "NOTEBOOK_AWAY_BUFFER")
    except SettingError:
        raise SettingError(f"NOTEBOOK_AWAY_BUFFER={value!r} is not a size. Set NOTEBOOK_AWAY_BUFFER in .env "
                           "to e.g. 32m or 1g (0 turns it off).") from None


def memory_limit() -> int:
    """NOTEBOOK_MEMORY_LIMIT in bytes: 0 (none) or a size Docker reads, at least MIN_MEMORY_LIMIT."""
    value = (_get("NOTEBOOK_MEMORY_LIMIT") or "").strip() or "0"
    try:
        size = parse_size(value, "NOTEBOOK_MEMORY_LIMIT")
    except SettingError:
        raise SettingError(f"NOTEBOOK_MEMORY_LIMIT={value!r} is not a size. Set NOTEBOOK_MEMORY_LIMIT in .env "
                           "to e.g. 16g, or 0 for no limit.") from None
    if 0 < size < MIN_MEMORY_LIMIT:
        raise SettingError(
            f"NOTEBOOK_MEMORY_LIMIT={value} is below {MIN_MEMORY_LIMIT // 2**20}m, the least the stack "
            "runs in (Jupyter, supervisord, the kernel keeper and tmux take about 150 MiB, each kernel "
            "40 MiB or more). Set NOTEBOOK_MEMORY_LIMIT in .env to at least 256m (e.g. 16g), or 0 for "
            "no limit.")
    return size


def cull_idle_timeout() -> int:
    """JUPYTER_CULL_IDLE_TIMEOUT: seconds before an idle kernel is shut down (0: never)."""
    return _seconds("JUPYTER_CULL_IDLE_TIMEOUT", 0)


def cull_interval() -> int:
    return _seconds("JUPYTER_CULL_INTERVAL", DEFAULT_CULL_INTERVAL, minimum=1)


def cull_connected() -> bool:
    """JUPYTER_CULL_CONNECTED: whether kernels with a client connected may be culled too."""
    return _boolean("JUPYTER_CULL_CONNECTED", False)


def kernel_checkpoints() -> bool:
    """KERNEL_CHECKPOINTS: each kernel saves what a cell changed after the cell ends (in a forked child, at
    most a fifth of the time), so that a crash of the container loses at most the last cell."""
    return _boolean("KERNEL_CHECKPOINTS", True)


def kernel_snapshots() -> bool:
    """KERNEL_SNAPSHOTS: each idle kernel saves its variables when the container stops; the kernels are
    started again under their ids, with them, when it starts (restart, recreate, reboot)."""
    return _boolean("KERNEL_SNAPSHOTS", True)


def _size_setting(name: str, default: str, example: str) -> int:
    value = (_get(name) or "").strip() or default
    try:
        return parse_size(value, name)
    except SettingError:
        raise SettingError(f"{name}={value!r} is not a size. Set {name} in .env to e.g. {example}.") from None


def kernel_state_limit() -> int:
    """KERNEL_STATE_LIMIT: the most one kernel's saved variables may take; past it the biggest variables
    are left out (and named in the notice)."""
    size = _size_setting("KERNEL_STATE_LIMIT", DEFAULT_STATE_LIMIT, "8g")
    if size <= 0:
        raise SettingError("KERNEL_STATE_LIMIT=0 would save nothing. Set KERNEL_STATE_LIMIT in .env to a size "
                           "(e.g. 8g), or turn saving off with KERNEL_CHECKPOINTS=false and KERNEL_SNAPSHOTS=false.")
    return size


def kernel_state_floor() -> int:
    """KERNEL_STATE_FREE_FLOOR: free space kept on the state volume; saving pauses rather than go below it."""
    return _size_setting("KERNEL_STATE_FREE_FLOOR", DEFAULT_STATE_FLOOR, "2g")


def kernel_state_saved() -> bool:
    """Whether kernels come back after a container restart at all (either way of saving is on)."""
    return kernel_checkpoints() or kernel_snapshots()


def workspace_is_custom() -> bool:
    """WORKSPACE_IS_CUSTOM (compose sets it when WORKSPACE is set): only the default is ever handed over."""
    return bool((_get("WORKSPACE_IS_CUSTOM") or "").strip())


def ca_bundle() -> Path:
    """Where the merged CA bundle goes (the image's SSL_CERT_FILE)."""
    return Path(_get("SSL_CERT_FILE") or STATE_DIR / "ca-bundle.pem")


# --- the token -----------------------------------------------------------------------------------------

TOKEN_HINT = "e.g. `python3 -c 'import secrets; print(secrets.token_hex(24))'`"


def check_token(token: str, source: str) -> str:
    if not token:
        raise SettingError(
            f"The Jupyter token from {source} is empty: that would leave the server open to anyone. Set "
            f"JUPYTER_TOKEN in .env to at least {MIN_TOKEN_LENGTH} characters ({TOKEN_HINT}), or remove it "
            "to have one generated and kept.")
    if len(token) < MIN_TOKEN_LENGTH:
        raise SettingError(
            f"The Jupyter token from {source} has {len(token)} characters; at least {MIN_TOKEN_LENGTH} are "
            "needed. Set a longer JUPYTER_TOKEN in .env, or remove it to have one generated and kept.")
    if len(token) > MAX_TOKEN_LENGTH:
        raise SettingError(
            f"The Jupyter token from {source} has {len(token)} characters; at most {MAX_TOKEN_LENGTH} work "
            f"(every request carries it in a header). Use a shorter one, {TOKEN_HINT}.")
    if any(c.isspace() or not c.isprintable() or not c.isascii() for c in token):
        raise SettingError(
            f"The Jupyter token from {source} contains white space, control or non-ASCII characters "
            f"(HTTP headers and URLs carry ASCII only). Use ASCII letters, digits and punctuation, {TOKEN_HINT}.")
    return token


def check_token_file(path: Path, what: str) -> None:
    """A token file must be a regular file of a sane size; anything else is refused, named as it is."""
    label = f"JUPYTER_TOKEN_FILE={path}" if what == "JUPYTER_TOKEN_FILE" else f"{what} ({path})"
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SettingError(f"{label} does not exist in the container. Mount the file (or a Docker secret) "
                           "there for both the notebooks and the check services, or unset it.") from None
    except OSError as exc:
        raise SettingError(f"{label} cannot be looked at by the notebook user (uid {os.getuid()}): "
                           f"{exc.strerror}. Make its folder readable, or give the token as JUPYTER_TOKEN.") from None
    if stat.S_ISDIR(st.st_mode):
        raise SettingError(f"{label} is a folder, not a file holding the token. Point it at the file itself.")
    if not stat.S_ISREG(st.st_mode):
        raise SettingError(f"{label} is not a regular file (a device, pipe or socket). Put the token in a "
                           "plain file of its own and point at that.")
    if st.st_size > MAX_TOKEN_LENGTH * 4:
        raise SettingError(f"{label} has {st.st_size} bytes: that is not a token file (a token has "
                           f"{MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} characters). Point it at the file holding "
                           "just the token.")


def given_token(kept_file: Path) -> tuple[str, str]:
    """(token, where it came from): JUPYTER_TOKEN, a token file or Docker secret, or the one kept in
    `kept_file`; NoTokenYet when none is given and none was generated yet."""
    if _get("JUPYTER_TOKEN") is not None:
        return check_token(_get("JUPYTER_TOKEN") or "", "JUPYTER_TOKEN"), "JUPYTER_TOKEN"
    token_file = _get("JUPYTER_TOKEN_FILE")
    path = Path(token_file) if token_file else DOCKER_SECRET_TOKEN_FILE
    if token_file or path.exists():
        check_token_file(path, "JUPYTER_TOKEN_FILE" if token_file else "the Docker secret jupyter_token")
        try:
            with path.open(encoding="utf-8") as f:
                text = f.read(MAX_TOKEN_LENGTH * 4)
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingError(
                f"The token file {path} cannot be read by the notebook user (uid {os.getuid()}): "
                f"{getattr(exc, 'strerror', None) or exc}. Make it readable (`chmod 644 FILE` on the host, "
                "or `chown` it to HOST_UID), or give the token as JUPYTER_TOKEN in .env.") from None
        return check_token(text.strip(), str(path)), str(path)
    if kept_file.is_file():
        return check_token(kept_file.read_text().strip(), str(kept_file)), "kept"
    raise NoTokenYet(f"No token yet: {kept_file} is made when the container starts.")


TOKEN_VARIABLES = ("JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE")


# --- under JupyterHub (hub/: a spawner starts the container with the hub's JUPYTERHUB_* variables) -------

# The server's API token as the spawner hands it over; the entrypoint moves it to a private file.
HUB_TOKEN_VARIABLES = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")
SINGLEUSER_SERVER = "/opt/venv/bin/jupyterhub-singleuser"
PLAIN_SERVER = "/opt/venv/bin/jupyter-server"


def hub_mode() -> bool:
    """Started by a JupyterHub spawner (JUPYTERHUB_SERVICE_URL set): the hub's single-user server, and
    the hub's login, replace the fixed-token server."""
    return bool((_get("JUPYTERHUB_SERVICE_URL") or "").strip())


def hub_service_url() -> tuple[str, int]:
    """(host, port) of JUPYTERHUB_SERVICE_URL, where the hub expects the server."""
    from urllib.parse import urlsplit

    value = (_get("JUPYTERHUB_SERVICE_URL") or "").strip()
    try:
        parts = urlsplit(value)
        port_number = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port_number = 0
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_number:
        raise SettingError(f"JUPYTERHUB_SERVICE_URL={value!r} is not an http URL with a host. It comes from "
                           "the hub's spawner: check the hub's configuration (hub/jupyterhub_config.py).")
    return parts.hostname, port_number


def base_url() -> str:
    """The path the server serves under: / alone, or the hub's prefix (/user/NAME/)."""
    if not hub_mode():
        return "/"
    prefix = (_get("JUPYTERHUB_SERVICE_PREFIX") or "/").strip()
    if not prefix.startswith("/"):
        raise SettingError(f"JUPYTERHUB_SERVICE_PREFIX={prefix!r} is not a path. It comes from the hub's "
                           "spawner: check the hub's configuration.")
    return prefix if prefix.endswith("/") else prefix + "/"


def hub_token() -> str:
    """The server's API token from the hub (JUPYTERHUB_API_TOKEN, or JPY_API_TOKEN of older hubs)."""
    token = next((_get(name) for name in HUB_TOKEN_VARIABLES if _get(name)), "")
    if not token.strip():
        raise SettingError("JUPYTERHUB_SERVICE_URL is set but JUPYTERHUB_API_TOKEN is not: this container is "
                           "started by JupyterHub's spawner, which sets both; start it from the hub "
                           "(hub/compose.yaml), not by hand.")
    return token.strip()


def server_command() -> str:
    """The Jupyter server program supervisord runs: the hub's single-user server under a hub."""
    if not hub_mode():
        return PLAIN_SERVER
    if not Path(SINGLEUSER_SERVER).exists():
        raise SettingError("JUPYTERHUB_SERVICE_URL is set but this image has no jupyterhub-singleuser: a hub "
                           "must spawn the hub-user image (hub/compose.yaml builds it), not this one.")
    return SINGLEUSER_SERVER


@dataclass(frozen=True)
class Setting:
    """One variable a user may set in .env: declared once here, with its default and what it does."""

    name: str
    default: str  # as .env.example shows it ("" for none)
    help: str
    read: Callable[[], object] | None = None  # the container's reader, which validates it (None: read elsewhere)
    example: str | None = None  # what .env.example shows instead of the default, where it shows an example


# Every variable of .env, in .env.example's order (tests/unit/test_settings.py holds .env.example, compose.yaml and
# the tests' own list to it). The container reads those with a reader; the others only compose and the build use.
SETTINGS = (
    Setting("COMPOSE_PROJECT_NAME", "persistent-notebooks", "Compose's project: stacks, state and tokens of "
            "their own per checkout (default: the checkout's folder name)"),
    Setting("NOTEBOOK_PORT", str(DEFAULT_PORT), "the port, on the host's 127.0.0.1 and inside", port),
    # The token's two sources are checked where the token is read (given_token, by the check and at start).
    Setting("JUPYTER_TOKEN", "", "Jupyter's token, 16 to 512 characters (unset: one is generated and kept)"),
    Setting("JUPYTER_TOKEN_FILE", "", "or a file in the container holding it", example="/run/secrets/jupyter_token"),
    Setting("TMUX_SESSION", DEFAULT_SESSION, "the tmux session VSCode's terminals open into", session_name,
            example="persistent-me"),
    Setting("TMUX_RESTORE", "true", "save the tmux session and rebuild it after a restart", tmux_restore),
    Setting("NOTEBOOK_AWAY_BUFFER", DEFAULT_AWAY_BUFFER, "output kept per kernel while no client is connected",
            away_buffer),
    Setting("KERNEL_CHECKPOINTS", "true", "each kernel saves its variables after every cell", kernel_checkpoints),
    Setting("KERNEL_SNAPSHOTS", "true", "each idle kernel saves its variables at container stop", kernel_snapshots),
    Setting("KERNEL_STATE_LIMIT", DEFAULT_STATE_LIMIT, "the most one kernel's saved variables may take",
            kernel_state_limit),
    Setting("KERNEL_STATE_FREE_FLOOR", DEFAULT_STATE_FLOOR, "free space always left on the state volume",
            kernel_state_floor),
    Setting("WORKSPACE", "./workspace", "the host folder mounted at /workspace"),
    Setting("HOST_UID", "1000", "your uid on the host: the container's user gets it"),
    Setting("HOST_GID", "1000", "your gid on the host"),
    Setting("CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt", "CA certificates the build and the container trust"),
    Setting("JUPYTER_CULL_IDLE_TIMEOUT", "0", "shut down kernels idle this many seconds (0: never)",
            cull_idle_timeout),
    Setting("JUPYTER_CULL_INTERVAL", str(DEFAULT_CULL_INTERVAL), "how often to look for idle kernels",
            cull_interval),
    Setting("JUPYTER_CULL_CONNECTED", "false", "whether kernels with a client connected may be culled",
            cull_connected),
    Setting("NOTEBOOK_MEMORY_LIMIT", "0", "the container's memory limit (0: none)", memory_limit),
    Setting("BASE_IMAGE", "debian:trixie-slim", "the Debian-based image the build starts from"),
    Setting("NOTEBOOK_IMAGE", "persistent-notebooks:uid1000-gid1000", "the image's name"),
    Setting("EXTRA_APT_PACKAGES", "", "Debian packages built into the image", example="graphviz jq"),
    Setting("EXTRA_PIP_REQUIREMENTS", "", "a requirements file built into the image's Python",
            example="requirements-extra.txt"),
    Setting("COMPOSE_FILE", "", "Compose's files, e.g. with the GPU override", example="compose.yaml:compose.gpu.yaml"),
)


def check_all() -> str:
    """Every variable the container reads, checked; SettingError names the first bad one. Returns the
    tmux session name."""
    name = session_name()
    if hub_mode():
        hub_token()
        base_url()
        server_command()
    for setting in SETTINGS:
        if setting.read is not None:
            setting.read()
    return name
