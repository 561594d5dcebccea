"""Start-up beside the floors (bare `jupyter server`, stock `jupyter lab`): command and container start to the
first 200, what the one-shot check adds, start-up to healthy; what the stack's start costs over Jupyter's own."""

from __future__ import annotations

import secrets
import statistics
import time
from datetime import UTC, datetime

import docker
from harness import Bench, progress, summary
from stack import Stack, free_port, http_get, wait_for

FLOOR_ARGS = ["server", "--ServerApp.ip=0.0.0.0", "--ServerApp.port=8888", "--ServerApp.port_retries=0",
              "--ServerApp.open_browser=False", "--ServerApp.root_dir=/tmp"]


def answers(base_url: str, token: str) -> bool:
    """Whether the Jupyter server at base_url answers /api/status with 200 (within 2 s)."""
    return http_get(f"{base_url}/api/status", token, timeout=2)[0] == 200


def first_200(base_url: str, token: str, started: float, timeout: float = 120) -> float:
    """Seconds from `started` (time.monotonic()) to the server's first 200, polled every 20 ms."""
    wait_for(lambda: answers(base_url, token), timeout, f"{base_url} to answer", interval=0.02)
    return time.monotonic() - started


def docker_time(attrs: dict, key: str = "StartedAt") -> float:
    """A container's State time (RFC 3339 with nanoseconds, UTC) as seconds since the epoch."""
    whole, _, fraction = attrs["State"][key].rstrip("Z").partition(".")
    return datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp() + float(f"0.{fraction or 0}")


def since_container_start(attrs: dict) -> float:
    """Seconds from the container's start (Docker's State.StartedAt) to now: in-container start-up."""
    return time.time() - docker_time(attrs)


def check_cost(client: docker.DockerClient, stack: Stack) -> tuple[float, float]:
    """What the one-shot check container adds to `docker compose up -d`: seconds from its start to the stack
    container's start, and of those, from its exit to that start (Compose noticing it is done, and the start)."""
    check = client.containers.get(stack.compose("ps", "-a", "-q", "check").stdout.strip())
    started = docker_time(stack.inspect())
    return started - docker_time(check.attrs), started - docker_time(check.attrs, "FinishedAt")


class Floor:
    """The same image with only the Jupyter server: no tini, supervisord, tmux or healthcheck.

    app "server" is bare `jupyter server` (no configuration, no extension); "lab" is stock `jupyter lab`
    as `pip install jupyterlab` leaves it, which serves the UI the stack's URL opens: the server
    extensions its packages enable (JupyterLab, LSP, terminals, notebook-shim), none of this project's
    configuration (/etc/jupyter hidden). A restarting floor is started again at once when killed.
    """

    def __init__(self, client: docker.DockerClient, image: str, app: str = "server", restarting: bool = False) -> None:
        self.token = secrets.token_hex(24)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.started = time.monotonic()
        # restarting: started again at once whenever it ends (a shell loop: the least any supervisor can add).
        entrypoint = ["sh", "-c", 'while :; do jupyter "$@"; done', "floor"] if restarting else ["jupyter"]
        self.container = client.containers.run(
            image, [app, *FLOOR_ARGS[1:]], entrypoint=entrypoint, detach=True, healthcheck={"test": ["NONE"]},
            # Stock Jupyter: none of the image's settings (kernel adoption, kept output, token file).
            environment={"JUPYTER_TOKEN": self.token, **({} if app == "lab" else {"JUPYTER_NO_CONFIG": "1"})},
            tmpfs={"/etc/jupyter": ""} if app == "lab" else {},
            ports={"8888/tcp": ("127.0.0.1", self.port)},
            labels={"persistent-notebooks.benchmark": "floor"},
        )

    def remove(self) -> None:
        self.container.remove(force=True, v=True)


def measure(bench: Bench) -> None:
    """results["startup_s"], over bench.runs starts of each; the last stack and floor stay up for the later sections
    (bench.stack, bench.floor, bench.token, bench.stack_container)."""
    client, image, runs, floors = bench.client, bench.image, bench.runs, bench.floors
    up_healthy, up_200, floor_200, up_inside, floor_inside = [], [], [], [], []
    lab_200, lab_inside, up_check, check_end = [], [], [], []
    for i in range(runs):
        progress(f"start-up {i + 1}/{runs}: stack")
        # The token given, so that no `docker exec` (to read a generated one) competes with the start-up.
        stack = bench.new_stack(JUPYTER_TOKEN=secrets.token_hex(24))
        started = time.monotonic()
        stack.up()
        token = stack.variables["JUPYTER_TOKEN"]
        up_200.append(first_200(stack.base_url, token, started))
        up_inside.append(since_container_start(stack.inspect()))
        whole, after_exit = check_cost(client, stack)
        up_check.append(whole)
        check_end.append(after_exit)
        stack.wait_healthy()
        up_healthy.append(time.monotonic() - started)
        if i < runs - 1:
            stack.down()
        progress(f"start-up {i + 1}/{runs}: floor")
        floor = Floor(client, image)
        floors.append(floor)  # removed at the end even if it never answers
        floor_200.append(first_200(floor.base_url, floor.token, floor.started))
        floor.container.reload()
        floor_inside.append(since_container_start(floor.container.attrs))
        if i < runs - 1:
            floors.pop().remove()
        progress(f"start-up {i + 1}/{runs}: floor with JupyterLab")
        lab = Floor(client, image, app="lab")
        try:
            lab_200.append(first_200(lab.base_url, lab.token, lab.started))
            lab.container.reload()
            lab_inside.append(since_container_start(lab.container.attrs))
        finally:
            lab.remove()
    bench.results["startup_s"] = {
        "stack_to_healthy": summary(up_healthy), "stack_to_first_200": summary(up_200),
        "floor_to_first_200": summary(floor_200),
        "ratio_first_200": statistics.median(up_200) / statistics.median(floor_200),
        "stack_container_start_to_first_200": summary(up_inside),
        "check_container_start_to_stack_start": summary(up_check),
        "check_container_exit_to_stack_start": summary(check_end),
        "floor_container_start_to_first_200": summary(floor_inside),
        "ratio_container_start_to_first_200": statistics.median(up_inside) / statistics.median(floor_inside),
        "lab_floor_to_first_200": summary(lab_200),
        "lab_floor_container_start_to_first_200": summary(lab_inside),
        "ratio_first_200_lab": statistics.median(up_200) / statistics.median(lab_200),
        "ratio_container_start_to_first_200_lab": statistics.median(up_inside) / statistics.median(lab_inside)}
    bench.stack, bench.floor = bench.stacks[-1], floors[-1]
    bench.token = bench.stack.token()
    bench.stack_container = client.containers.get(bench.stack.container_id())
