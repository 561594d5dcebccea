"""`python -m persistent_hub.admin` in the hub's container (scripts/hub runs it): the hub's users.

  user add NAME [--password-stdin] [--uid N [--gid N]] [--admin]
                                  make a user; prints a generated password once (or reads one)
  user password NAME [--password-stdin]
                                  a new password (generated and printed once, or read)
  user remove NAME [--delete-state]
                                  stop and remove the user's server and account; their state volume is
                                  kept unless --delete-state (their workspace folder is always kept)
  users                           users with their uid and their server's state
  token NAME                      a new API token for NAME (VSCode's JupyterHub extension asks for one)

Passwords are stored bcrypt-hashed by NativeAuthenticator in the hub's database; the hub's REST API
(as the admin service) makes and removes the hub's users, their servers and tokens.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
import urllib.error
import urllib.request

from . import accounts, passwords
from .accounts import AccountError

HUB_API = "http://127.0.0.1:8081/hub/api"
DB_URL = f"sqlite:///{accounts.STATE_DIR / 'jupyterhub.sqlite'}"


def api(method: str, path: str, body: dict | None = None, ok404: bool = False):
    request = urllib.request.Request(HUB_API + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"token {accounts.admin_token()}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and ok404:
            return None
        raise AccountError(f"the hub answered {exc.code} to {method} {path}: "
                           f"{exc.read().decode(errors='replace')[:300]}") from None
    except OSError as exc:
        raise AccountError(f"the hub does not answer ({exc}); is it up? `docker compose -f hub/compose.yaml "
                           "logs hub`") from None
    return json.loads(text) if text else None


def _user_info_session():
    from nativeauthenticator.orm import UserInfo
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    return UserInfo, Session(create_engine(DB_URL))


def set_password(name: str, password: str) -> None:
    UserInfo, db = _user_info_session()
    with db:
        info = UserInfo.find(db, name)
        hashed = passwords.hashed(password)
        if info is None:
            db.add(UserInfo(username=name, password=hashed, is_authorized=True))
        else:
            info.password, info.is_authorized = hashed, True
        db.commit()


def docker_client():
    import docker

    return docker.from_env()


def user_container(name: str):
    import docker.errors

    try:
        return docker_client().containers.get(container_name(name))
    except docker.errors.NotFound:
        return None


def container_name(name: str) -> str:
    from .deployment import container_name

    return container_name(name)


def new_password(args) -> str:
    """Read from stdin (--password-stdin), or generated."""
    if not args.password_stdin:
        return secrets.token_urlsafe(12)
    password = sys.stdin.readline().rstrip("\n")
    problem = passwords.problem(password)
    if problem:
        raise AccountError(problem)
    return password


def show_password(args, password: str) -> None:
    if not args.password_stdin:
        print("password (shown once, on the next line):", file=sys.stderr, flush=True)
        print(password)


def existing(name: str) -> str:
    """The name, checked, of a user the hub has; AccountError otherwise."""
    name = accounts.check_username(name)
    if api("GET", f"/users/{name}", ok404=True) is None:
        raise AccountError(f"no user {name!r}: `scripts/hub users` lists them.")
    return name


def cmd_password(args) -> int:
    name = existing(args.name)
    password = new_password(args)
    set_password(name, password)
    print(f"new password for {name}", file=sys.stderr)
    show_password(args, password)
    return 0


def cmd_add(args) -> int:
    name = accounts.check_username(args.name)
    password = new_password(args)
    if api("GET", f"/users/{name}", ok404=True) is not None:
        raise AccountError(f"user {name!r} exists already: `scripts/hub user remove {name}` first, or pick "
                           "another name.")
    uid, gid = accounts.ids_of(name, args.uid, args.gid)
    api("POST", f"/users/{name}", {"admin": bool(args.admin)})
    set_password(name, password)
    print(f"made user {name} (uid {uid}, gid {gid}{', admin' if args.admin else ''})", file=sys.stderr)
    show_password(args, password)
    return 0


def cmd_remove(args) -> int:
    name = accounts.check_username(args.name)
    if api("GET", f"/users/{name}", ok404=True) is not None:
        api("DELETE", f"/users/{name}/server", ok404=True)
        deadline = time.monotonic() + 120
        while (api("GET", f"/users/{name}") or {}).get("servers", {}).get("", {}).get("pending"):
            if time.monotonic() > deadline:
                raise AccountError(f"{name}'s server did not stop within 120 s; see the hub's log.")
            time.sleep(0.5)
        api("DELETE", f"/users/{name}", ok404=True)  # NativeAuthenticator drops the password too
    else:
        print(f"no user {name!r} in the hub; removing what is left of them", file=sys.stderr)
    container = user_container(name)
    if container is not None:
        container.remove(force=True)
    if args.delete_state:
        import docker.errors

        for volume in (f"{container_name(name)}-state", f"{container_name(name)}-vscode"):
            try:
                docker_client().volumes.get(volume).remove()
            except docker.errors.NotFound:
                pass
        accounts.forget(name)
        print(f"removed {name}, their server and state volume (their workspace folder is kept)", file=sys.stderr)
    else:
        print(f"removed {name} and their server; their state volume is kept (--delete-state removes it)",
              file=sys.stderr)
    return 0


def cmd_users(args) -> int:
    ids = accounts.all_ids()
    rows = [("USER", "UID", "SERVER", "CONTAINER")]
    for user in api("GET", "/users") or []:
        server = (user.get("servers") or {}).get("")
        state = "stopped" if not server else ("pending" if server.get("pending") else
                                             "running" if server.get("ready") else "starting")
        container = user_container(user["name"])
        rows.append((user["name"] + (" (admin)" if user.get("admin") else ""),
                     str(ids.get(user["name"], {}).get("uid", "-")), state,
                     container.status if container is not None else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_token(args) -> int:
    name = existing(args.name)
    answer = api("POST", f"/users/{name}/tokens", {"note": "scripts/hub token"})
    print(answer["token"])
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/hub", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    user = commands.add_parser("user").add_subparsers(dest="action", required=True)
    add = user.add_parser("add")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true")
    add.add_argument("--uid", type=int)
    add.add_argument("--gid", type=int)
    add.add_argument("--admin", action="store_true")
    add.set_defaults(func=cmd_add)
    password = user.add_parser("password")
    password.add_argument("name")
    password.add_argument("--password-stdin", action="store_true")
    password.set_defaults(func=cmd_password)
    remove = user.add_parser("remove")
    remove.add_argument("name")
    remove.add_argument("--delete-state", action="store_true")
    remove.set_defaults(func=cmd_remove)
    commands.add_parser("users").set_defaults(func=cmd_users)
    where = commands.add_parser("container-name")  # for scripts/hub status|kernels|attach
    where.add_argument("name")
    where.set_defaults(func=lambda args: print(container_name(accounts.check_username(args.name))) or 0)
    token = commands.add_parser("token")
    token.add_argument("name")
    token.set_defaults(func=cmd_token)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AccountError as exc:
        print(f"scripts/hub: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
