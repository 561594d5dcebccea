"""The hub's figures (scripts/benchmark --hub): a hub of its own (hub/compose.yaml), real logins.

- login to the user's server answering: a first spawn (the user's image layer built, a container made)
  and a kept server (stopped, then started again: the same container);
- memory of an idle user's container (no kernels), and of the hub's own (JupyterHub and its proxy);
- logins: a wrong password of an existing and of an unknown user (the same bcrypt work), and the hub's API
  during 16 wrong logins at once beside the quiet API (bcrypt runs off the hub's event loop);
- the single-user stack's kernel figures through the hub's proxy: reconnect + trivial execute, and
  kill -9 of the user's Jupyter server -> every kernel answering again (same ids).
measure() takes a running hub, so the test suite runs it (quick) on the hub its tests use.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import (  # noqa: E402
    KILL_JUPYTER,
    container_memory,
    fmt,
    kernels_answering_since,
    progress,
    ready_kernel,
    reconnects,
    summary,
)
from hubclient import (  # noqa: E402
    Hub,
    HubUser,
    api_seconds,
    api_times_during_logins,
    running_hub,
    wrong_login_times,
)
from stack import docker_client, wait_for  # noqa: E402

PASSWORD = "bench-secret-42"


def new_user(hub: Hub, name: str) -> None:
    made = hub.script("user", "add", name, "--password-stdin", stdin=PASSWORD + "\n")
    if made.returncode != 0:
        raise RuntimeError(made.stderr)
    hub.passwords[name] = PASSWORD


def login_to_server(hub: Hub, name: str) -> tuple[HubUser, float]:
    """Seconds from the login form posted to the user's server answering through the hub."""
    started = time.monotonic()
    user = hub.logged_in(name)
    user.start_server()
    return user, time.monotonic() - started


def stop_server(user: HubUser) -> None:
    user.hub_api("DELETE", f"/users/{user.name}/server")
    wait_for(lambda: not (user.hub_api("GET", f"/users/{user.name}").json().get("servers") or {}), 120,
             f"{user.name}'s server to stop")


def kernels_back_after_kill(hub: Hub, user: HubUser, kernel_ids: list[str]) -> float:
    killed_at = float(hub.exec_user(user.name, "python3", "-c", KILL_JUPYTER).stdout)
    return kernels_answering_since(killed_at, user.server_url, user.token, kernel_ids)


def settled(hub: Hub, name: str) -> bool:
    health = hub.user_container(name).attrs["State"].get("Health", {}).get("Status")
    return health == "healthy"


def measure(hub: Hub, runs: int, tries: int, prefix: str = "bench") -> dict:
    first, kept = [], []
    for i in range(runs):
        progress(f"hub: first spawn {i + 1}/{runs}")
        new_user(hub, f"{prefix}{i}")
        user, seconds = login_to_server(hub, f"{prefix}{i}")
        first.append(seconds)
    # The last user's server: kept-server starts, memory and kernels.
    for i in range(runs):
        progress(f"hub: kept server {i + 1}/{runs}")
        stop_server(user)
        user, seconds = login_to_server(hub, user.name)
        kept.append(seconds)
    wait_for(lambda: settled(hub, user.name), 120, f"{user.name}'s container to be healthy")
    memory = container_memory(hub.user_container(user.name))
    hub_memory = container_memory(docker_client().containers.get(hub.hub_container()))
    progress("hub: reconnects and kill -9 of the user's Jupyter")
    kernel_ids = [ready_kernel(user.server_url, user.token) for _ in range(3)]
    reconnect = reconnects(user.server_url, user.token, kernel_ids[0], tries)
    back = []
    for _ in range(runs):
        wait_for(lambda: settled(hub, user.name), 120, f"{user.name}'s container to settle before a kill")
        back.append(kernels_back_after_kill(hub, user, kernel_ids))
    progress("hub: wrong logins")
    hub.passwords.setdefault(user.name, PASSWORD)
    wrong = wrong_login_times(hub, user.name, 4 if tries < 10 else 20)
    quiet = [api_seconds(hub) for _ in range(40)]
    busy = api_times_during_logins(hub, 16)
    return {"login_to_server_s": {"first_spawn": summary(first), "kept_server": summary(kept)},
            "idle_user_container_mib": memory, "hub_container_mib": hub_memory, "reconnect_s": summary(reconnect),
            "kill_jupyter_3_kernels_back_s": summary(back),
            "wrong_login_s": {kind: summary(times) for kind, times in wrong.items()},
            "hub_api_s": {"quiet": summary(quiet), "during_16_wrong_logins": summary(busy)}}


def table(r: dict) -> str:
    return "\n".join([
        "",
        "| hub (one user's server through the hub's proxy) | figure |",
        "|---|---|",
        f"| login -> server answering, first spawn (image layer, container) | "
        f"{fmt(r['login_to_server_s']['first_spawn'])} |",
        f"| login -> server answering, kept server (stopped, started again) | "
        f"{fmt(r['login_to_server_s']['kept_server'])} |",
        f"| idle user container, no kernels | {r['idle_user_container_mib']:.1f} MiB |",
        f"| the hub's container (JupyterHub and configurable-http-proxy) | {r['hub_container_mib']:.1f} MiB |",
        f"| reconnect + trivial execute | {fmt(r['reconnect_s'])} |",
        f"| kill -9 of the user's Jupyter -> 3 kernels answering again | {fmt(r['kill_jupyter_3_kernels_back_s'])} |",
        f"| wrong password, existing user (login form posted -> refused) | {fmt(r['wrong_login_s']['existing'])} |",
        f"| wrong password, unknown user | {fmt(r['wrong_login_s']['unknown'])} |",
        f"| hub API (GET /hub/api/), quiet (floor) | {fmt(r['hub_api_s']['quiet'])} |",
        f"| hub API during 16 wrong logins at once | {fmt(r['hub_api_s']['during_16_wrong_logins'])} |",
    ])


def run(quick: bool, runs: int) -> dict:
    workspaces = Path(tempfile.mkdtemp(prefix="bench-hub-")) / "users"
    progress("hub: building and starting a hub of its own")
    with running_hub("pnhubbench", workspaces) as hub:
        return measure(hub, 1 if quick else runs, 3 if quick else 20)


