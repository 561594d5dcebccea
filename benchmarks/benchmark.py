"""What the persistent stack costs, measured beside the floor: the same image running only `jupyter server`.

Prints a table and writes the same figures as JSON. Every timing is the median of several runs
with min and max. Run it through scripts/benchmark (which provides the venv); --quick does one
short pass of each part (the test suite runs that, so the benchmark cannot rot).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import docker  # noqa: E402
import kernel_state  # noqa: E402
from harness import (  # noqa: E402
    KILL_JUPYTER,
    MIB,
    container_memory,
    fmt,
    kernels_answering_since,
    progress,
    ready_kernel,
    reconnects,
    summary,
)
from kernelclient import KernelConnection, api, start_kernel  # noqa: E402
from stack import REPO, SUPERVISORCTL, Stack, free_port, http_get, wait_for  # noqa: E402

FLOOR_ARGS = ["server", "--ServerApp.ip=0.0.0.0", "--ServerApp.port=8888", "--ServerApp.port_retries=0",
              "--ServerApp.open_browser=False", "--ServerApp.root_dir=/tmp"]


def first_200(base_url: str, token: str, started: float, timeout: float = 120) -> float:
    wait_for(lambda: http_get(f"{base_url}/api/status", token, timeout=2)[0] == 200, timeout,
             f"{base_url} to answer", interval=0.02)
    return time.monotonic() - started


def docker_time(attrs: dict, key: str = "StartedAt") -> float:
    """A container's State time (RFC 3339 with nanoseconds, UTC) as seconds since the epoch."""
    whole, _, fraction = attrs["State"][key].rstrip("Z").partition(".")
    return datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp() + float(f"0.{fraction or 0}")


def since_container_start(attrs: dict) -> float:
    """Seconds from the container's start (Docker's State.StartedAt) to now: in-container start-up."""
    return time.time() - docker_time(attrs)


def check_cost(client: docker.DockerClient, stack: Stack) -> float:
    """Seconds from the one-shot check container's start to the stack container's start (what the check
    adds to `docker compose up -d`: its start, its run, its exit, compose noticing)."""
    check = client.containers.get(stack.compose("ps", "-a", "-q", "check").stdout.strip())
    return docker_time(stack.inspect()) - docker_time(check.attrs)


class Floor:
    """The same image with only the Jupyter server: no tini, supervisord, tmux or healthcheck.

    app "server" is bare `jupyter server` (no configuration, no extension); "lab" is stock `jupyter lab`
    as `pip install jupyterlab` leaves it, which serves the UI the stack's URL opens: the server
    extensions its packages enable (JupyterLab, LSP, terminals, notebook-shim), none of this project's
    configuration (/etc/jupyter hidden).
    """

    def __init__(self, client: docker.DockerClient, image: str, app: str = "server") -> None:
        self.token = secrets.token_hex(24)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.started = time.monotonic()
        self.container = client.containers.run(
            image, [app, *FLOOR_ARGS[1:]], entrypoint=["jupyter"], detach=True, healthcheck={"test": ["NONE"]},
            # Stock Jupyter: none of the image's settings (kernel adoption, kept output, token file).
            environment={"JUPYTER_TOKEN": self.token, **({} if app == "lab" else {"JUPYTER_NO_CONFIG": "1"})},
            tmpfs={"/etc/jupyter": ""} if app == "lab" else {},
            ports={"8888/tcp": ("127.0.0.1", self.port)},
            labels={"persistent-notebooks.benchmark": "floor"},
        )

    def remove(self) -> None:
        self.container.remove(force=True, v=True)


def cpu_ns(container) -> int:
    """CPU time the container's cgroup has used (every process in it, short-lived ones too), ns."""
    return container.stats(stream=False, one_shot=True)["cpu_stats"]["cpu_usage"]["total_usage"]


def idle_cpu(containers: dict, seconds: float) -> dict[str, float]:
    """Per container, the share of one core it used while nothing was asked of it (percent)."""
    before = {name: cpu_ns(c) for name, c in containers.items()}
    started = time.monotonic()
    time.sleep(seconds)  # the measurement window itself: nothing to poll
    took = time.monotonic() - started
    return {name: 100 * (cpu_ns(c) - before[name]) / 1e9 / took for name, c in containers.items()}


PROCESS_MEMORY = r"""
import os
for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode().strip()
        rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))
        pss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/smaps_rollup") if l.startswith("Pss:"))
    except (OSError, StopIteration):
        continue
    if cmd and os.getpid() != pid:
        print(f"{rss}\t{pss}\t{cmd}")
"""


def process_label(cmd: str) -> str:
    for needle, label in (("tini --", "tini"), ("persistent-notebooks/healthcheck", "healthcheck probe"),
                          ("tmux save", "tmux saver (sh)"),
                          ("persistent_notebooks.keeper", "kernel keeper"),
                          ("persistent_notebooks.supervisor", "supervisord"), ("supervisord", "supervisord"),
                          ("tmux -D", "tmux server"), ("tmux -N -C", "tmux session keeper"),
                          ("jupyter-server", "jupyter server"),
                          ("ipykernel_launcher", "kernel"), ("tini", "tini"), ("bash", "bash in tmux")):
        if needle in cmd:
            return label
    return cmd[:40]


def process_memory(container) -> dict[str, dict]:
    out = container.exec_run(["python3", "-c", PROCESS_MEMORY]).output.decode()
    result: dict[str, dict] = {}
    for line in out.splitlines():
        rss, pss, cmd = line.split("\t", 2)
        entry = result.setdefault(process_label(cmd), {"rss_mib": 0.0, "pss_mib": 0.0, "count": 0})
        entry["rss_mib"] += int(rss) / 1024
        entry["pss_mib"] += int(pss) / 1024
        entry["count"] += 1
    return result


def throughput(base_url: str, token: str, kernel_id: str, seconds: float, cell_id: str | None = None) -> float:
    """Trivial cells one after the other over one websocket, per second; with cell_id, each names its cell as
    JupyterLab's do (metadata.cellId), so that the server hands it to the runner before the kernel has it."""
    with KernelConnection(base_url, token, kernel_id) as connection:
        count, started = 0, time.monotonic()
        while time.monotonic() - started < seconds:
            connection.execute("pass", cell_id)
            count += 1
        return count / (time.monotonic() - started)


def lab_throughput(base_url: str, token: str, seconds: float) -> float:
    """throughput() of JupyterLab-shaped cells in the kernel of a notebook's session (followed by the runner)."""
    cell = {"cell_type": "code", "id": "bench-cell", "metadata": {}, "source": "pass", "outputs": [],
            "execution_count": None}
    api(base_url, token, "/api/contents/bench-lab.ipynb", "PUT", {"type": "notebook", "format": "json", "content": {
        "cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}})
    session = api(base_url, token, "/api/sessions", "POST", {"path": "bench-lab.ipynb", "type": "notebook",
                                                              "name": "bench-lab.ipynb", "kernel": {"name": "python3"}})
    kernel_id = session["kernel"]["id"]
    with KernelConnection(base_url, token, kernel_id, timeout=120) as connection:
        connection.execute("1", "bench-cell")  # the kernel up, and the runner started and following it
    rate = throughput(base_url, token, kernel_id, seconds, "bench-cell")
    api(base_url, token, f"/api/sessions/{session['id']}", "DELETE")
    api(base_url, token, "/api/contents/bench-lab.ipynb", "DELETE")
    return rate


JUPYTER_HEAL = r"""
import json, os, subprocess, sys, time, urllib.request
conf = "/etc/persistent-notebooks/supervisord.conf"
pid = subprocess.run(["supervisorctl", "-c", conf, "pid", "jupyter"], capture_output=True, text=True).stdout
token = subprocess.run(["notebookctl", "token"], capture_output=True, text=True).stdout.strip()
port = os.environ.get("NOTEBOOK_PORT", "8888")
request = urllib.request.Request(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": "token " + token})
os.kill(int(pid), 9)
t = time.monotonic()
while True:
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            if response.status == 200:
                break
    except OSError:
        pass
    time.sleep(0.01)
print(time.monotonic() - t)
"""

TMUX_HEAL = r"""
import subprocess, sys, time
name = sys.argv[1]
subprocess.run(["tmux", "-N", "kill-server"])
t = time.monotonic()
while subprocess.run(["tmux", "-N", "has-session", "-t", "=" + name], capture_output=True).returncode:
    time.sleep(0.01)
print(time.monotonic() - t)
"""


TMUX_SAVE_RESTORE = r"""
import json, os, resource, subprocess, sys, time
from persistent_notebooks import paths  # noqa: the save itself runs as the saver runs it, a new process
name, runs, windows, lines = sys.argv[1], int(sys.argv[2]), 5, 10_000
tmux = lambda *a: subprocess.run(["tmux", "-N", *a], capture_output=True, text=True)
for i in range(windows):
    tmux("new-window", "-t", f"={name}:", "-n", f"bench{i}")
    tmux("send-keys", "-t", f"={name}:bench{i}", f"seq 1 {lines}", "Enter")
for i in range(windows):
    while str(lines) not in tmux("capture-pane", "-p", "-t", f"={name}:bench{i}").stdout:
        time.sleep(0.05)
server = int(tmux("display-message", "-p", "#{pid}").stdout)
def server_cpu():
    fields = open(f"/proc/{server}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
def own_cpu():
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
saves = []
for _ in range(runs):
    c0, s0, t0 = own_cpu(), server_cpu(), time.monotonic()
    subprocess.run([sys.executable, "-m", "persistent_notebooks.tmux", "save"], check=True)
    saves.append({"saver_cpu": own_cpu() - c0, "tmux_cpu": server_cpu() - s0, "wall": time.monotonic() - t0})
size = os.path.getsize(paths.TMUX_SAVE_FILE)
tmux("kill-server")
t0 = time.monotonic()
while tmux("has-session", "-t", f"={name}").returncode or f"bench{windows - 1}" not in tmux(
        "list-windows", "-t", f"={name}", "-F", "#{window_name}").stdout:
    time.sleep(0.01)
session_back = time.monotonic() - t0
while str(lines) not in tmux("capture-pane", "-p", "-t", f"={name}:bench{windows - 1}").stdout:
    time.sleep(0.01)
print(json.dumps({"saves": saves, "save_file_bytes": size, "restore_session_s": session_back,
                  "restore_scrollback_s": time.monotonic() - t0}))
for i in range(windows):
    tmux("kill-window", "-t", f"={name}:bench{i}")
"""


def replay_time(stack: Stack, token: str, lines: int) -> tuple[float, int]:
    """Seconds from connecting to having every line a kernel printed (one message each) while away."""
    kernel_id = ready_kernel(stack.base_url, token)
    with KernelConnection(stack.base_url, token, kernel_id) as away:
        msg_id = away.submit(f"import time\ntime.sleep(0.5)\nfor i in range({lines}):\n    print(i, flush=True)")
        away.follow(msg_id, seconds=0.2)
    stack.wait_kernel_idle(kernel_id, 300, msg_id)
    started = time.monotonic()
    with KernelConnection(stack.base_url, token, kernel_id, timeout=300) as back:
        got = back.follow(msg_id)
    took = time.monotonic() - started
    api(stack.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")
    return took, len(got["stdout"].split())


def burst(base_url: str, token: str, lines: int, away: bool) -> dict:
    """A cell printing `lines` lines as fast as it can, one message each: what a client gets of it.

    Connected: the client follows the cell throughout. Away: the client drops before the first line
    and the same session (what stock Jupyter buffers for) comes back once the cell has ended.
    Returns the lines lost, the stream messages that carried the rest, and their rate at the client.
    """
    kernel_id = ready_kernel(base_url, token)
    code = f"import time\ntime.sleep({1 if away else 0})\nfor i in range({lines}):\n    print(i, flush=True)"
    with KernelConnection(base_url, token, kernel_id, timeout=300) as client:
        started = time.monotonic()
        msg_id = client.submit(code)
        out = client.follow(msg_id, seconds=0.3) if away else client.follow(msg_id)
    if away:
        wait_for(lambda: api(base_url, token, f"/api/kernels/{kernel_id}")["execution_state"] == "idle", 300,
                 "the burst to end", interval=0.2)
        with KernelConnection(base_url, token, kernel_id, timeout=300, session=client.session) as again:
            started = time.monotonic()
            out = again.follow(msg_id, seconds=15)
    took = time.monotonic() - started
    api(base_url, token, f"/api/kernels/{kernel_id}", "DELETE")
    got = {word for word in out["stdout"].split() if word.isdigit()}
    messages = sum(1 for m in out["messages"] if m["msg_type"] == "stream")
    return {"lost": lines - len(got), "stream_messages": messages, "messages_per_s": messages / took}


def busy_kernel_after_kill(stack: Stack, token: str) -> dict:
    """kill -9 of Jupyter while a kernel runs a long cell: seconds to the API, then to its websocket open."""
    kernel_id = ready_kernel(stack.base_url, token)
    with KernelConnection(stack.base_url, token, kernel_id) as client:
        msg_id = client.submit("import time\nfor i in range(600):\n    print(i, flush=True)\n    time.sleep(0.5)")
        client.follow(msg_id, seconds=1)
    settle(stack)
    killed = time.monotonic()
    stack.kill_jupyter()
    stack.wait_api(token, 120)
    api_back = time.monotonic()
    with KernelConnection(stack.base_url, token, kernel_id, timeout=300) as client:
        opened = time.monotonic()
        client.follow(msg_id, seconds=0.5)
    api(stack.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")
    return {"api_back_s": api_back - killed, "websocket_after_api_s": opened - api_back}


MAKE_FOLDERS = """
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    os.makedirs(f"{root}/d{i // 1000}/f{i}", exist_ok=True)
"""
SCAN = """
import time
from persistent_notebooks.environments import SCAN_BUDGET, scan_workspace
started = time.monotonic()
scan = scan_workspace(SCAN_BUDGET)
print(time.monotonic() - started)
"""


def workspace_scan(stack: Stack, token: str, folders: int) -> dict:
    """A workspace of `folders` folders: one search's time, and request latency while searches run."""
    root = f"/workspace/bench-scan-{folders}"
    stack.exec("python3", "-c", MAKE_FOLDERS, root, str(folders), timeout=600)
    try:
        scan_s = float(stack.exec("python3", "-c", SCAN, timeout=120).stdout)
        latencies = []
        deadline = time.monotonic() + max(5.0, 2 * scan_s)
        while time.monotonic() < deadline:  # VSCode lists kernelspecs whenever it connects
            started = time.monotonic()
            api(stack.base_url, token, "/api/kernelspecs")
            latencies.append(time.monotonic() - started)
        return {"folders": folders, "scan_s": scan_s, "kernelspecs_latency_s": summary(latencies),
                "kernelspecs_max_s": max(latencies)}
    finally:
        stack.exec("rm", "-rf", root, timeout=600)


def replay_after_keeper_kill(stack: Stack, token: str, lines: int) -> dict:
    """Output kept while away, then kill -9 of the keeper: what the next client gets, and how soon."""
    kernel_id = ready_kernel(stack.base_url, token)
    with KernelConnection(stack.base_url, token, kernel_id) as away:
        msg_id = away.submit(f"import time\ntime.sleep(0.5)\nfor i in range({lines}):\n    print(i, flush=True)")
        away.follow(msg_id, seconds=0.2)
    stack.wait_kernel_idle(kernel_id, 300, msg_id)
    keeper = stack.program_pid("kernel-keeper")
    stack.exec("kill", "-KILL", str(keeper))
    wait_for(lambda: stack.program_pid("kernel-keeper") not in (0, keeper), 60, "a new keeper", interval=0.2)
    wait_for(lambda: kernel_id in stack.keeper_status(), 60, "the new keeper to follow the kernel", interval=0.2)
    started = time.monotonic()
    got: dict = {"stdout": "", "messages": []}
    took = None
    with KernelConnection(stack.base_url, token, kernel_id, timeout=300) as back:
        quiet = 0.0  # until the first message, then until nothing more comes for a second
        while time.monotonic() - started < 30 and quiet < 1:
            part = back.follow(msg_id, seconds=0.1)
            got["stdout"] += part["stdout"]
            got["messages"] += part["messages"]
            if part["messages"] and took is None:
                took = time.monotonic() - started
            quiet = 0.0 if part["messages"] or took is None else quiet + 0.1
    api(stack.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")
    assert took is not None, "the next client got nothing in its cell after the keeper was killed"
    text = got["stdout"] + "".join(m["content"].get("text", "") for m in got["messages"] if m["msg_type"] == "stream")
    return {"lines_kept": lines, "lines_replayed": len([w for w in got["stdout"].split() if w.isdigit()]),
            "loss_announced": "lost" in text, "first_message_s": took}


def kernels_back_after_kill(stack: Stack, token: str, kernel_ids: list[str]) -> float:
    """Seconds from kill -9 of Jupyter to every kernel answering an execute again (same ids)."""
    killed_at = float(stack.exec("python3", "-c", KILL_JUPYTER).stdout)
    return kernels_answering_since(killed_at, stack.base_url, token, kernel_ids)


ENV_PACKAGE = "iniconfig==2.1.0"  # small, pure Python, not in the image


def settle(stack: Stack) -> None:
    """Wait until every program is RUNNING past its startsecs, so one event is measured at a time."""
    wait_for(stack.settled, 60, "the programs to settle", interval=0.2)


def image_sizes(client: docker.DockerClient, image: str, base: str) -> dict:
    """Uncompressed size, and the layers attributed to base, Debian packages, venv and the rest."""
    history = client.api.history(image)  # newest first; the base image's own layers come last
    own = history[: len(history) - len(client.api.history(base))]
    groups = {"base image": client.images.get(base).attrs["Size"], "debian packages": 0, "python venv": 0,
              "project files and user": 0}
    for layer in own:
        created = layer.get("CreatedBy", "")
        key = ("debian packages" if "apt-get" in created or "apt-install" in created else
               "python venv" if "pip install" in created else "project files and user")
        groups[key] += layer["Size"]
    total = client.images.get(image).attrs["Size"]
    return {"total_mb": total / 1e6, **{f"{k}_mb": v / 1e6 for k, v in groups.items()}}


def run(args: argparse.Namespace) -> dict:
    client = docker.from_env()
    runs = 1 if args.quick else args.runs
    tries = 3 if args.quick else 20
    env_file = Path(tempfile.mkstemp(prefix="bench-", suffix=".env")[1])
    workspace = Path(tempfile.mkdtemp(prefix="bench-workspace-"))
    if os.getuid() == 0:
        os.chown(workspace, 1000, 1000)
    uid = str(os.getuid() or 1000)
    image = args.image
    results: dict = {"quick": args.quick, "machine": {
        "platform": platform.platform(), "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "docker": client.version()["Version"]}}
    stacks: list[Stack] = []
    floors: list[Floor] = []

    def new_stack() -> Stack:
        # The token given, so that no `docker exec` (to read a generated one) competes with the start-up.
        stack = Stack(workspace, image, env_file, HOST_UID=uid, HOST_GID=uid, TMUX_SESSION="bench",
                      JUPYTER_TOKEN=secrets.token_hex(24))
        stacks.append(stack)
        return stack

    try:
        if image is None:
            image = "persistent-notebooks:benchmark"
            progress("building the image (cached layers are reused)")
            Stack(workspace, image, env_file, HOST_UID=uid, HOST_GID=uid).compose("build", timeout=1800)

        # 1. start-up
        up_healthy, up_200, floor_200, up_inside, floor_inside = [], [], [], [], []
        lab_200, lab_inside, up_check = [], [], []
        for i in range(runs):
            progress(f"start-up {i + 1}/{runs}: stack")
            stack = new_stack()
            started = time.monotonic()
            stack.up()
            token = stack.variables["JUPYTER_TOKEN"]
            up_200.append(first_200(stack.base_url, token, started))
            up_inside.append(since_container_start(stack.inspect()))
            up_check.append(check_cost(client, stack))
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
        results["startup_s"] = {"stack_to_healthy": summary(up_healthy), "stack_to_first_200": summary(up_200),
                                "floor_to_first_200": summary(floor_200),
                                "ratio_first_200": statistics.median(up_200) / statistics.median(floor_200),
                                "stack_container_start_to_first_200": summary(up_inside),
                                "check_container_start_to_stack_start": summary(up_check),
                                "floor_container_start_to_first_200": summary(floor_inside),
                                "ratio_container_start_to_first_200":
                                    statistics.median(up_inside) / statistics.median(floor_inside),
                                "lab_floor_to_first_200": summary(lab_200),
                                "lab_floor_container_start_to_first_200": summary(lab_inside),
                                "ratio_first_200_lab": statistics.median(up_200) / statistics.median(lab_200),
                                "ratio_container_start_to_first_200_lab":
                                    statistics.median(up_inside) / statistics.median(lab_inside)}
        stack, floor = stacks[-1], floors[-1]
        token = stack.token()
        stack_container = client.containers.get(stack.container_id())

        # 2. idle CPU (whole cgroups, no kernels, nobody connected) and idle memory
        window = 5 if args.quick else 60
        progress(f"idle CPU over {window} s, stack and floor")
        stack.wait_healthy()
        results["idle_cpu_percent"] = {**idle_cpu({"stack": stack_container, "floor": floor.container}, window),
                                       "seconds": window}
        progress("idle memory")
        processes = process_memory(stack_container)
        overhead = [v for k, v in processes.items() if k not in ("jupyter server", "kernel", "healthcheck probe")]
        besides = sum(v["pss_mib"] for v in overhead)
        besides_rss = sum(v["rss_mib"] for v in overhead)
        memory = {"stack_container_mib": container_memory(stack_container),
                  "floor_container_mib": container_memory(floor.container),
                  "processes": processes, "besides_jupyter_pss_mib": besides,
                  "besides_jupyter_rss_mib": besides_rss, "with_kernels_mib": {}}
        kernel_ids: list[str] = []
        for count in ([1] if args.quick else [1, 10, 20]):
            progress(f"memory with {count} idle kernel(s)")
            while len(kernel_ids) < count:
                kernel_ids.append(ready_kernel(stack.base_url, token))
            memory["with_kernels_mib"][str(count)] = container_memory(stack_container)
            if count == 1:  # the keeper runs only while kernels do: what it costs then
                keeper = process_memory(stack_container).get("kernel keeper", {"pss_mib": 0.0, "rss_mib": 0.0})
                memory["keeper_with_a_kernel"] = {"pss_mib": keeper["pss_mib"], "rss_mib": keeper["rss_mib"]}
        top = max(int(k) for k in memory["with_kernels_mib"])
        memory["per_kernel_mib"] = (memory["with_kernels_mib"][str(top)] - memory["stack_container_mib"]) / top
        results["memory"] = memory

        # 3. reconnect and 4. throughput, on one kernel each side
        progress(f"reconnect x{tries}, stack and floor")
        floor_kernel = ready_kernel(floor.base_url, floor.token)
        stack_times = reconnects(stack.base_url, token, kernel_ids[0], tries)
        floor_times = reconnects(floor.base_url, floor.token, floor_kernel, tries)
        results["reconnect_s"] = {"stack": summary(stack_times), "floor": summary(floor_times),
                                  "ratio": statistics.median(stack_times) / statistics.median(floor_times)}
        seconds = 2 if args.quick else 10
        progress(f"throughput {seconds} s, stack and floor")
        stack_rate = throughput(stack.base_url, token, kernel_ids[0], seconds)
        floor_rate = throughput(floor.base_url, floor.token, floor_kernel, seconds)
        progress(f"throughput {seconds} s, JupyterLab-shaped cells (handed to the runner)")
        lab_rate = lab_throughput(stack.base_url, token, seconds)
        progress(f"throughput {seconds} s, stack without output kept while away (NOTEBOOK_AWAY_BUFFER=0)")
        plain = Stack(workspace, image, env_file, HOST_UID=uid, HOST_GID=uid, TMUX_SESSION="bench",
                      NOTEBOOK_AWAY_BUFFER="0")
        stacks.append(plain)
        plain.up()
        plain.wait_healthy()
        plain_token = plain.token()
        plain_rate = throughput(plain.base_url, plain_token, ready_kernel(plain.base_url, plain_token), seconds)
        plain.down()
        results["throughput_exec_per_s"] = {"stack": stack_rate, "floor": floor_rate, "ratio": stack_rate / floor_rate,
                                            "stack_without_away": plain_rate, "away_ratio": stack_rate / plain_rate,
                                            "jupyterlab_cells": lab_rate, "jupyterlab_ratio": lab_rate / stack_rate}

        # 3b. output kept while away: replay of 10,000 lines, one message each
        lines = 1000 if args.quick else 10_000
        progress(f"replay of {lines} lines kept while away")
        replay = [replay_time(stack, token, lines) for _ in range(1 if args.quick else 3)]
        assert all(n == lines for _, n in replay), f"replay lost lines: {replay}"
        results["away"] = {"lines": lines, "replay_s": summary([t for t, _ in replay])}
        progress(f"bursts of {lines} one-message lines, connected and away, stack and floor")
        results["burst"] = {"lines": lines, **{
            f"{where}_{mode}": burst(target.base_url, target.token if where == "floor" else token, lines,
                                     away=mode == "away")
            for where, target in (("stack", stack), ("floor", floor)) for mode in ("connected", "away")}}
        # 3c. kernels across a Jupyter crash: kill -9, then every kernel answers again
        adopt: dict[str, dict] = {}
        for count in ([1] if args.quick else [1, 20]):
            times = []
            for i in range(runs):
                progress(f"kill -9 of Jupyter with {count} kernel(s) {i + 1}/{runs}")
                settle(stack)
                times.append(kernels_back_after_kill(stack, token, kernel_ids[:count]))
            adopt[str(count)] = summary(times)
        results["kernels_back_after_kill_s"] = adopt
        settle(stack)
        for kernel_id in kernel_ids:
            api(stack.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")

        # 4b. a busy kernel across kill -9 of Jupyter; a big workspace; a killed keeper
        progress("busy kernel across kill -9 of Jupyter")
        busy = [busy_kernel_after_kill(stack, token) for _ in range(1 if args.quick else runs)]
        results["busy_after_kill_s"] = {key: summary([b[key] for b in busy])
                                        for key in ("api_back_s", "websocket_after_api_s")}
        results["workspace_scan"] = {}
        for folders in ([2000] if args.quick else [10_000, 100_000]):
            progress(f"workspace of {folders} folders: search time, kernelspec latency")
            settle(stack)
            results["workspace_scan"][str(folders)] = workspace_scan(stack, token, folders)
        progress("output kept while away, then kill -9 of the keeper")
        settle(stack)
        results["keeper_killed"] = replay_after_keeper_kill(stack, token, 1000)
        settle(stack)

        # 5. healing
        jupyter_heal, tmux_heal = [], []
        for i in range(runs):
            progress(f"healing {i + 1}/{runs}")
            # Timed inside the container, from the kill to the first 200 (no docker exec in the figure).
            settle(stack)
            jupyter_heal.append(float(stack.exec("python3", "-c", JUPYTER_HEAL).stdout))
            settle(stack)
            tmux_heal.append(float(stack.exec("python3", "-c", TMUX_HEAL, "bench").stdout))
        results["healing_s"] = {"jupyter_killed_to_200": summary(jupyter_heal),
                                "tmux_killed_to_session": summary(tmux_heal)}

        # 5b. tmux save (5 windows x 10,000 lines) and restore
        progress("tmux save and restore, 5 windows x 10,000 lines")
        settle(stack)
        tmux_state = json.loads(stack.exec("/opt/venv/bin/python", "-c", TMUX_SAVE_RESTORE, "bench",
                                           str(runs), timeout=300).stdout)
        results["tmux_save"] = {
            "saver_cpu_ms": summary([1000 * s["saver_cpu"] for s in tmux_state["saves"]]),
            "tmux_server_cpu_ms": summary([1000 * s["tmux_cpu"] for s in tmux_state["saves"]]),
            "wall_ms": summary([1000 * s["wall"] for s in tmux_state["saves"]]),
            "file_mb": tmux_state["save_file_bytes"] / 1e6,
            "restore_session_s": tmux_state["restore_session_s"],
            "restore_scrollback_s": tmux_state["restore_scrollback_s"]}

        # 5c. environments: one package, uv's cache empty (cold) or filled (warm), as the user runs it
        cold, warm = [], []
        for i in range(runs):
            progress(f"env create with one package, cold and warm {i + 1}/{runs}")
            stack.exec("sh", "-c", 'rm -rf "$UV_CACHE_DIR"')
            for times in (cold, warm):
                started = time.monotonic()
                stack.exec("notebookctl", "env", "create", "bench-env", ENV_PACKAGE, timeout=300)
                times.append(time.monotonic() - started)
                stack.exec("notebookctl", "env", "remove", "bench-env")
        results["env_create_s"] = {"package": ENV_PACKAGE, "cold": summary(cold), "warm": summary(warm)}

        # 5d. the kernel list's memory figures against the kernel's own smaps_rollup
        progress("kernels: 200 MB held, against /proc/PID/smaps_rollup")
        kernel_id = start_kernel(stack.base_url, token)
        with KernelConnection(stack.base_url, token, kernel_id) as kernel:
            executed = time.time()
            kernel.execute("held = b'x' * (200 * 2**20)")

            def listed() -> dict:
                listing = json.loads(stack.exec("notebookctl", "kernels", "--json").stdout)
                return next(r for r in listing["kernels"] if r["id"] == kernel_id)

            # the checkpoint after the cell forks the kernel; while that child lives, the two share the
            # 200 MB and each one's PSS is half of it: measure once it has saved and gone
            wait_for(lambda: (listed().get("checkpoint") or {}).get("at", 0) >= executed, 120,
                     "the kernel's checkpoint after the cell")
            pid = listed()["pid"]
            wait_for(lambda: not stack.exec("cat", f"/proc/{pid}/task/{pid}/children").stdout.strip(), 60,
                     "the kernel's checkpoint child to exit")
            started = time.monotonic()
            row = listed()
            took = time.monotonic() - started
        rollup = stack.exec("cat", f"/proc/{row['pid']}/smaps_rollup").stdout
        kib = {line.split(":")[0]: int(line.split()[1]) for line in rollup.splitlines()[1:]}
        results["kernels_list"] = {"pss_mib": row["pss"] / 2**20, "rss_mib": row["rss"] / 2**20,
                                   "smaps_pss_mib": kib["Pss"] / 1024, "smaps_rss_mib": kib["Rss"] / 1024,
                                   "command_s": took}
        api(stack.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")

        # 5e. server-side runs (notebookctl run): per-cell cost against one websocket, output to file, writes
        progress("server-side runs")
        results["runs"] = runs_figures(stack, token, workspace, runs, seconds=5 if args.quick else 30,
                                       sizes=(50, 500) if args.quick else (50, 500, 5000))

        # 5f. kernels across container restarts (benchmarks/kernel_state.py)
        progress("kernel state: snapshot and restore beside dd, restarts, per-cell checkpoints")
        settle(stack)
        results["kernel_state"] = kernel_state.measure(stack, token, args.quick)

        # 6. image size
        results["image"] = image_sizes(client, image, args.base_image)
    finally:
        progress("cleaning up")
        for stack in stacks:
            stack.down()
        for floor in floors:
            floor.remove()
        if args.image is None and not args.keep_image:
            subprocess.run(["docker", "image", "rm", "persistent-notebooks:benchmark"], capture_output=True)
        env_file.unlink(missing_ok=True)
        subprocess.run(["rm", "-rf", str(workspace)])
    return results


def write_notebook(workspace: Path, name: str, sources: list[str]) -> None:
    cells = [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None, "outputs": [],
              "source": src} for i, src in enumerate(sources)]
    path = workspace / name
    path.write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "P"}},
                                "nbformat": 4, "nbformat_minor": 5}))
    if os.getuid() == 0:
        os.chown(path, 1000, 1000)


def run_notebook(stack: Stack, name: str) -> dict:
    """notebookctl run NAME --wait in the container; the run's record."""
    out = stack.exec("notebookctl", "run", name, "--wait", timeout=600).stdout
    run_id = out.split()[1].rstrip(":")
    return next(r for r in json.loads(stack.exec("notebookctl", "runs", "--json").stdout) if r["id"] == run_id)


def runs_figures(stack: Stack, token: str, workspace: Path, runs: int, seconds: float,
                 sizes: tuple[int, ...]) -> dict:
    cells = 50
    write_notebook(workspace, "bench-1.ipynb", ["x = 1"])
    write_notebook(workspace, "bench-n.ipynb", ["x = 1"] * (cells + 1))
    per_cell = []
    for _ in range(runs):
        one, many = run_notebook(stack, "bench-1.ipynb"), run_notebook(stack, "bench-n.ipynb")
        per_cell.append(((many["ended"] - many["started"]) - (one["ended"] - one["started"])) / cells)
    # The cost per cell at several notebook sizes (it must not grow with the notebook): one run each.
    by_size = {}
    for size in sizes:
        write_notebook(workspace, f"bench-{size}.ipynb", ["x = 1"] * size)
        run = run_notebook(stack, f"bench-{size}.ipynb")
        by_size[str(size)] = ((run["ended"] - run["started"]) - (one["ended"] - one["started"])) / (size - 1)
    # The same trivial cells sent one after another over one websocket, as an editor runs them.
    kernel_id = next(s["kernel"]["id"] for s in api(stack.base_url, token, "/api/sessions")
                     if s["path"] == "bench-n.ipynb")
    websocket = []
    with KernelConnection(stack.base_url, token, kernel_id) as kernel:
        for _ in range(runs):
            started = time.monotonic()
            for _ in range(cells):
                kernel.execute("x = 1")
            websocket.append((time.monotonic() - started) / cells)
    # From a line printed in a long cell to the file holding it (read on the host, as an editor would).
    write_notebook(workspace, "bench-latency.ipynb", [
        "import time\nprint(repr(time.time()), flush=True)\ntime.sleep(3)"] * runs)
    out = stack.exec("notebookctl", "run", "bench-latency.ipynb").stdout
    run_id = out.split()[1].rstrip(":")
    latency, seen = [], set()
    deadline = time.monotonic() + 30 + 4 * runs
    while len(latency) < runs and time.monotonic() < deadline:
        try:
            nb = json.loads((workspace / "bench-latency.ipynb").read_text())
        except ValueError:
            raise AssertionError("the notebook was read half-written") from None
        now = time.time()
        for c in nb["cells"]:
            for o in c["outputs"]:
                stamp = "".join(o.get("text", "")).strip()
                if stamp and stamp not in seen:
                    seen.add(stamp)
                    latency.append(now - float(stamp))
        time.sleep(0.005)
    assert len(latency) == runs, f"only {len(latency)} of {runs} printed lines reached the file"
    wait_for(lambda: next(r for r in json.loads(stack.exec("notebookctl", "runs", "--json").stdout)
                          if r["id"] == run_id)["state"] == "done", 60, "the latency run to end")
    # Bytes the runner writes while a cell prints 100 lines a second (each line one message).
    lines = int(100 * seconds)
    write_notebook(workspace, "bench-chatty.ipynb", [
        f"import time\nfor i in range({lines}):\n    print(f'line {{i:06d}} of a chatty cell', flush=True)\n"
        "    time.sleep(0.01)"])
    out = stack.exec("notebookctl", "run", "bench-chatty.ipynb").stdout
    run_id = out.split()[1].rstrip(":")
    pid = stack.program_pid("notebook-runner")

    def written() -> int:
        io = stack.exec("cat", f"/proc/{pid}/io").stdout
        return int(next(line.split()[1] for line in io.splitlines() if line.startswith("wchar:")))
    before, started = written(), time.monotonic()
    wait_for(lambda: next(r for r in json.loads(stack.exec("notebookctl", "runs", "--json").stdout)
                          if r["id"] == run_id)["state"] == "done", seconds * 3 + 60, "the chatty run to end")
    took, total = time.monotonic() - started, written() - before
    size = (workspace / "bench-chatty.ipynb").stat().st_size
    # The runner's peak memory while a cell prints a lot (each stream kept to its first 64 KiB and last 1 MiB).
    printed_mb = 20 if seconds < 10 else 200
    write_notebook(workspace, "bench-print.ipynb", [
        f"import sys\nline = 'p' * 999 + '\\n'\nfor i in range({printed_mb * 1000}):\n    sys.stdout.write(line)"])
    run_notebook(stack, "bench-print.ipynb")
    status = stack.exec("cat", f"/proc/{stack.program_pid('notebook-runner')}/status").stdout
    runner_peak = next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
    # The runner's peak memory for a notebook of images: each cell displays a PNG over the one saved before.
    images_mb = 10 if seconds < 10 else 100
    png = ("import base64, IPython.display as d\n"
           "d.display(d.Image(data=base64.b64decode('iVBORw0KGgo=') + bytes(2 << 20), format='png'))")
    write_notebook(workspace, "bench-images.ipynb", [png] * (images_mb // 2))
    run_notebook(stack, "bench-images.ipynb")  # now the file holds the images: the measured run replaces them
    stack.exec(*SUPERVISORCTL, "restart", "notebook-runner")  # its peak memory from zero
    run_notebook(stack, "bench-images.ipynb")
    status = stack.exec("cat", f"/proc/{stack.program_pid('notebook-runner')}/status").stdout
    images_peak = next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
    images_file_mb = (workspace / "bench-images.ipynb").stat().st_size / MIB
    conflicts = save_conflicts(stack, token, workspace, 100 if seconds < 10 else 1000)
    return {"per_cell_s": summary(per_cell), "websocket_per_cell_s": summary(websocket),
            "per_cell_by_size_s": by_size, "runner_peak_mib": {"printed_mb": printed_mb, "peak": runner_peak},
            "images_runner_peak_mib": {"file_mib": images_file_mb, "peak": images_peak},
            "save_conflicts": conflicts,
            "overhead_per_cell_s": statistics.median(per_cell) - statistics.median(websocket),
            "output_to_file_s": summary(latency),
            "chatty": {"lines_per_s": 100, "seconds": took, "bytes_written": total,
                       "bytes_per_minute": total * 60 / took, "final_file_bytes": size}}


def runs_rows(r: dict) -> list[str]:
    """The server-side runs' rows of the table (r: runs_figures())."""
    return [
        f"| notebookctl run, per trivial cell (50 cells) / the same cells over one websocket | "
        f"{fmt(r['per_cell_s'])} / {fmt(r['websocket_per_cell_s'])}; overhead "
        f"{1000 * r['overhead_per_cell_s']:.1f} ms per cell | | |",
        "| notebookctl run, per trivial cell by notebook size | " + ", ".join(
            f"{size} cells: {1000 * t:.1f} ms" for size, t in r['per_cell_by_size_s'].items())
        + f" | websocket: {1000 * r['websocket_per_cell_s']['median']:.1f} ms | |",
        f"| notebookctl run, the runner's peak memory while a cell prints "
        f"{r['runner_peak_mib']['printed_mb']} MB | {r['runner_peak_mib']['peak']:.0f} MiB | | |",
        f"| notebookctl run, the runner's peak memory for a notebook of images "
        f"({r['images_runner_peak_mib']['file_mib']:.0f} MiB), each replaced | "
        f"{r['images_runner_peak_mib']['peak']:.0f} MiB | | |",
        f"| saves through Jupyter during a run ({r['save_conflicts']['saves_per_s']:.0f}/s): acknowledged "
        f"saves undone | {r['save_conflicts']['undone']} of {r['save_conflicts']['saves']} | | |",
        f"| notebookctl run, a line printed in a long cell -> in the file | {fmt(r['output_to_file_s'])} | | |",
        f"| notebookctl run, a cell printing 100 lines/s for {r['chatty']['seconds']:.0f} s: bytes written "
        f"per minute (final file) | {r['chatty']['bytes_per_minute'] / MIB:.2f} MiB/min "
        f"({r['chatty']['final_file_bytes'] / 1024:.0f} KiB) | | |",
    ]


def runs_table(r: dict) -> str:
    return "\n".join(["| server-side runs | figure | floor | |", "|---|---|---|---|", *runs_rows(r)])


def save_conflicts(stack: Stack, token: str, workspace: Path, saves: int) -> dict:
    """Saves through Jupyter's API (as JupyterLab saves) while a run writes the same notebook: how many
    acknowledged saves the file showed undone afterwards (read after each acknowledgement)."""
    import threading

    # One cell printing until told to stop: the run writes the file every second or so for as long as the saves go.
    stop_file = workspace / "bench-saves.stop"
    write_notebook(workspace, "bench-saves.ipynb", [
        f"import os, time\nwhile not os.path.exists('/workspace/{stop_file.name}'):\n    print('x', flush=True)\n"
        "    time.sleep(0.01)"])
    path = workspace / "bench-saves.ipynb"
    content = json.loads(path.read_text())
    out = stack.exec("notebookctl", "run", "bench-saves.ipynb").stdout
    run_id = out.split()[1].rstrip(":")
    acked, undone, stop = [0], [0], threading.Event()

    def on_disk() -> int:
        return int(json.loads(path.read_text())["metadata"].get("bench_edit", 0))

    def watch() -> None:
        while not stop.is_set():
            floor = acked[0]
            if on_disk() < floor:
                undone[0] += 1
    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    try:
        for edit in range(1, saves + 1):
            content["metadata"]["bench_edit"] = edit
            api(stack.base_url, token, "/api/contents/bench-saves.ipynb", "PUT",
                {"type": "notebook", "format": "json", "content": content})
            acked[0] = edit
    finally:
        stop.set()
        watcher.join()
    took = time.monotonic() - started
    stop_file.write_text("")
    wait_for(lambda: next(r for r in json.loads(stack.exec("notebookctl", "runs", "--json").stdout)
                          if r["id"] == run_id)["state"] == "done", 60, "the saves' run to end")
    stop_file.unlink()
    return {"saves": saves, "saves_per_s": saves / took, "undone": undone[0], "per_1000": 1000 * undone[0] / saves}


def table(r: dict) -> str:
    m, mem = r["machine"], r["memory"]
    lines = [
        f"persistent-notebooks benchmark{' (--quick)' if r['quick'] else ''}",
        f"machine: {m['platform']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, Docker {m['docker']}",
        "",
        "| measure | stack | floor (bare jupyter server) | ratio |",
        "|---|---|---|---|",
        f"| command to first 200 | {fmt(r['startup_s']['stack_to_first_200'])} | "
        f"{fmt(r['startup_s']['floor_to_first_200'])} | {r['startup_s']['ratio_first_200']:.2f} |",
        f"| container start to first 200 | {fmt(r['startup_s']['stack_container_start_to_first_200'])} | "
        f"{fmt(r['startup_s']['floor_container_start_to_first_200'])} | "
        f"{r['startup_s']['ratio_container_start_to_first_200']:.2f} |",
        f"| ... of the command: the one-shot check (its start to the stack container's start) | "
        f"{fmt(r['startup_s']['check_container_start_to_stack_start'])} | | |",
        f"| ... floor with JupyterLab (`jupyter lab`): command / container start to first 200 | | "
        f"{fmt(r['startup_s']['lab_floor_to_first_200'])} / "
        f"{fmt(r['startup_s']['lab_floor_container_start_to_first_200'])} | "
        f"{r['startup_s']['ratio_first_200_lab']:.2f} / "
        f"{r['startup_s']['ratio_container_start_to_first_200_lab']:.2f} |",
        f"| idle CPU of the whole container, no kernels ({r['idle_cpu_percent']['seconds']} s) | "
        f"{r['idle_cpu_percent']['stack']:.2f} % of a core | {r['idle_cpu_percent']['floor']:.2f} % | |",
        f"| start-up to healthy | {fmt(r['startup_s']['stack_to_healthy'])} | | |",
        f"| idle container memory | {mem['stack_container_mib']:.1f} MiB | {mem['floor_container_mib']:.1f} MiB | "
        f"{mem['stack_container_mib'] / mem['floor_container_mib']:.2f} |",
        f"| everything besides Jupyter (PSS / RSS) | {mem['besides_jupyter_pss_mib']:.1f} / "
        f"{mem['besides_jupyter_rss_mib']:.1f} MiB | 0 | |",
        f"| ... the kernel keeper, which runs only while kernels do (PSS / RSS) | "
        f"{mem['keeper_with_a_kernel']['pss_mib']:.1f} / {mem['keeper_with_a_kernel']['rss_mib']:.1f} MiB | | |",
        *[f"| container with {n} idle kernel(s) | {v:.1f} MiB | | |" for n, v in mem["with_kernels_mib"].items()],
        f"| one idle kernel | {mem['per_kernel_mib']:.1f} MiB | | |",
        f"| reconnect + trivial execute | {fmt(r['reconnect_s']['stack'])} | {fmt(r['reconnect_s']['floor'])} | "
        f"{r['reconnect_s']['ratio']:.2f} |",
        f"| executions per second, one websocket | {r['throughput_exec_per_s']['stack']:.0f} | "
        f"{r['throughput_exec_per_s']['floor']:.0f} | {r['throughput_exec_per_s']['ratio']:.2f} |",
        f"| executions per second, JupyterLab's cells (each handed to the runner first) | "
        f"{r['throughput_exec_per_s']['jupyterlab_cells']:.0f} | | with / without "
        f"{r['throughput_exec_per_s']['jupyterlab_ratio']:.2f} |",
        f"| executions per second, output kept while away off (NOTEBOOK_AWAY_BUFFER=0) | "
        f"{r['throughput_exec_per_s']['stack_without_away']:.0f} | | with / without "
        f"{r['throughput_exec_per_s']['away_ratio']:.2f} |",
        f"| replay of {r['away']['lines']} lines kept while away (one message each) | "
        f"{fmt(r['away']['replay_s'])} | | |",
        *(f"| burst of {r['burst']['lines']} one-message lines, {mode}: lines lost, stream messages "
          f"(per second at the client) | {r['burst'][f'stack_{mode}']['lost']}, "
          f"{r['burst'][f'stack_{mode}']['stream_messages']} ({r['burst'][f'stack_{mode}']['messages_per_s']:.0f}/s) | "
          f"{r['burst'][f'floor_{mode}']['lost']}, {r['burst'][f'floor_{mode}']['stream_messages']} "
          f"({r['burst'][f'floor_{mode}']['messages_per_s']:.0f}/s) | |" for mode in ("connected", "away")),
        *[f"| kill -9 of Jupyter -> {n} kernel(s) answering again | {fmt(v)} | | |"
          for n, v in r["kernels_back_after_kill_s"].items()],
        f"| heal: Jupyter killed -> API 200 | {fmt(r['healing_s']['jupyter_killed_to_200'])} | | |",
        f"| heal: tmux killed -> session back | {fmt(r['healing_s']['tmux_killed_to_session'])} | | |",
        f"| kill -9 of Jupyter, a kernel busy in a long cell: API back | "
        f"{fmt(r['busy_after_kill_s']['api_back_s'])} | | |",
        f"| ... then that kernel's websocket open | {fmt(r['busy_after_kill_s']['websocket_after_api_s'])} | | |",
        *(f"| workspace of {w['folders']:,} folders: one search; GET /api/kernelspecs meanwhile (max) | "
          f"{w['scan_s']:.2f} s; {fmt(w['kernelspecs_latency_s'])} (max {w['kernelspecs_max_s']:.2f} s) | | |"
          for w in r["workspace_scan"].values()),
        f"| kill -9 of the keeper holding {r['keeper_killed']['lines_kept']} lines: lines replayed, loss announced, "
        f"first message | {r['keeper_killed']['lines_replayed']}, {r['keeper_killed']['loss_announced']}, "
        f"{r['keeper_killed']['first_message_s']:.2f} s | | |",
        f"| tmux save, 5 windows x 10,000 lines: CPU of the save (a new process) / tmux server | "
        f"{fmt(r['tmux_save']['saver_cpu_ms'], 'ms')} / {fmt(r['tmux_save']['tmux_server_cpu_ms'], 'ms')} | | |",
        f"| tmux restore: kill-server -> session back / all scrollback shown | "
        f"{r['tmux_save']['restore_session_s']:.3f} s / {r['tmux_save']['restore_scrollback_s']:.3f} s | | |",
        f"| env create, one package ({r['env_create_s']['package']}): uv cache empty / warm | "
        f"{fmt(r['env_create_s']['cold'])} / {fmt(r['env_create_s']['warm'])} | | |",
        f"| notebookctl kernels, a kernel holding 200 MB: PSS / RSS (smaps_rollup: PSS / RSS) | "
        f"{r['kernels_list']['pss_mib']:.1f} / {r['kernels_list']['rss_mib']:.1f} MiB "
        f"({r['kernels_list']['smaps_pss_mib']:.1f} / {r['kernels_list']['smaps_rss_mib']:.1f}); "
        f"the command {r['kernels_list']['command_s']:.2f} s | | |",
        *runs_rows(r["runs"]),
        f"| image size (uncompressed) | {r['image']['total_mb']:.0f} MB | | |",
        "",
        "per process, idle (PSS / RSS MiB): " + ", ".join(
            f"{k} {v['pss_mib']:.1f} / {v['rss_mib']:.1f}" + (f" x{v['count']}" if v["count"] > 1 else "")
            for k, v in mem["processes"].items()),
        "image layers (MB): " + ", ".join(f"{k[:-3]} {v:.0f}" for k, v in r["image"].items() if k != "total_mb"),
    ]
    if r.get("kernel_state"):
        lines += ["", kernel_state.table(r["kernel_state"])]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short pass of each part")
    parser.add_argument("--runs", type=int, default=5, help="runs per timing (default 5)")
    parser.add_argument("--image", help="benchmark this image instead of building one")
    parser.add_argument("--base-image", default="debian:trixie-slim", help="the image's base, for layer sizes")
    parser.add_argument("--keep-image", action="store_true", help="keep the image the benchmark built")
    parser.add_argument("--json", default=str(REPO / "benchmark-results.json"), help="where to write the JSON")
    parser.add_argument("--hub", action="store_true", help="the hub's figures (benchmarks/hub.py) instead")
    parser.add_argument("--kernel-state", action="store_true",
                        help="only the kernel state figures (benchmarks/kernel_state.py), on a stack of their own")
    parser.add_argument("--runs-only", action="store_true",
                        help="only the server-side runs' figures (50/500/5,000 cells, 200 MB printed, 1,000 saves), "
                             "on a stack of their own")
    args = parser.parse_args()
    if args.runs_only:
        with kernel_state.stack_of_its_own(args.image) as (stack, token, workspace):
            figures = runs_figures(stack, token, workspace, args.runs, seconds=5 if args.quick else 30,
                                   sizes=(50, 500) if args.quick else (50, 500, 5000))
        Path(args.json).write_text(json.dumps({"runs": figures}, indent=2) + "\n")
        print(runs_table(figures))
        return 0
    if args.kernel_state:
        figures = kernel_state.run_alone(args.image, args.quick)
        Path(args.json).write_text(json.dumps({"kernel_state": figures}, indent=2) + "\n")
        print(kernel_state.table(figures))
        return 0
    if args.hub:
        import hub

        figures = hub.run(args.quick, args.runs)
        Path(args.json).write_text(json.dumps({"hub": figures}, indent=2) + "\n")
        print(hub.table(figures))
        return 0
    results = run(args)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\n(JSON: {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
