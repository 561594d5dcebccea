"""User names, each user's uid and gid, and the admin service's token: the hub's records in its volume.

Owners: users.json is written by whoever first needs a user's ids (`scripts/hub user add`, or the
spawner for a user made on the hub's admin page), under a lock, atomically; the admin token by the
hub's config at its first start. Both private (0600) in the hub's state volume.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
from pathlib import Path

STATE_DIR = Path(os.environ.get("HUB_STATE_DIR", "/srv/jupyterhub"))
USERS_FILE = STATE_DIR / "users.json"
ADMIN_TOKEN_FILE = STATE_DIR / "admin-service-token"
ADMIN_SERVICE = "persistent-hub-admin"
# Lower case (the hub lowercases names), then letters, digits and . _ - : what a container, a volume
# and a host folder name can all hold as given, so each user's are recognisable.
USERNAME_PATTERN = r"[a-z][a-z0-9._-]{0,31}"
FIRST_UID = 10001
DNS_LABEL = 63  # a container's name is its host name on the hub's network (DockerSpawner.use_internal_hostname)


class AccountError(Exception):
    """Bad input from the admin; the message says what to do instead."""


def check_username(name: str, prefix: str | None = None) -> str:
    """The name if a user's server can be made under it (PREFIX-NAME, escaped, a DNS label); else AccountError.
    prefix: the deployment's container prefix (default: this hub's)."""
    if not re.fullmatch(USERNAME_PATTERN, name):
        raise AccountError(
            f"user name {name!r} is not taken: use 1 to 32 lower-case letters, digits and . _ - , starting "
            "with a letter (it names the user's container, volume and folder), e.g. 'alice' or 'j.doe'.")
    from . import deployment

    prefix = deployment.prefix() if prefix is None else prefix
    container = deployment.container_name(name, prefix)
    if len(container) > DNS_LABEL:
        room = DNS_LABEL - len(prefix) - 1
        raise AccountError(
            f"user name {name!r} is too long for this hub: the user's container would be {container!r}, "
            f"{len(container)} characters, and a container's name (its host name on the hub's network) holds "
            f"at most {DNS_LABEL}. Here a name may have {room} characters, each . _ - counting as 3: use a "
            "shorter one.")
    return name


def write_private(path: Path, text: str) -> None:
    """Whole or not at all: written beside, fsynced, renamed into place; readable by its owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def _locked():
    lock = os.open(STATE_DIR / ".users.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)


def all_ids() -> dict[str, dict[str, int]]:
    try:
        return json.loads(USERS_FILE.read_text())
    except FileNotFoundError:
        return {}


def ids_of(name: str, uid: int | None = None, gid: int | None = None) -> tuple[int, int]:
    """The user's (uid, gid): kept ones, else the ones given, else the next free uid (gid = uid)."""
    with _locked():
        users = all_ids()
        if name in users:
            kept = users[name]
            if uid is not None and uid != kept["uid"]:
                raise AccountError(f"user {name!r} already has uid {kept['uid']}; remove them with "
                                   "--delete-state first to give another.")
            return kept["uid"], kept["gid"]
        if uid is None:
            uid = max([FIRST_UID - 1] + [u["uid"] for u in users.values()]) + 1
        if uid <= 0 or (gid is not None and gid <= 0):
            raise AccountError("--uid and --gid must be above 0: no user's server runs as root.")
        users[name] = {"uid": uid, "gid": uid if gid is None else gid}
        write_private(USERS_FILE, json.dumps(users, indent=1, sort_keys=True))
        return users[name]["uid"], users[name]["gid"]


def forget(name: str) -> None:
    with _locked():
        users = all_ids()
        if users.pop(name, None) is not None:
            write_private(USERS_FILE, json.dumps(users, indent=1, sort_keys=True))


def admin_token() -> str:
    """The admin service's API token (scripts/hub uses it inside the hub's container); made once."""
    if not ADMIN_TOKEN_FILE.is_file():
        write_private(ADMIN_TOKEN_FILE, secrets.token_hex(32))
    return ADMIN_TOKEN_FILE.read_text().strip()
