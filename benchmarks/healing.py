"""Healing: kernels answering again after kill -9 of Jupyter (idle ones, and one busy in a long cell), the output
kept while away across a killed keeper, Jupyter and tmux killed and back, tmux's save and restore."""

from __future__ import annotations

import json
import statistics
import time

from harness import KILL_JUPYTER, Bench, kernels_answering_since, progress, ready_kernel, settle, summary
from kernelclient import KernelConnection, api
from stack import Stack, wait_for
from startup import Floor, answers


def kernels_back_after_kill(stack: Stack, token: str, kernel_ids: list[str]) -> float:
    """Seconds from kill -9 of Jupyter to every kernel answering an execute again (same ids)."""
    killed_at = float(stack.exec("python3", "-c", KILL_JUPYTER).stdout)
    return kernels_answering_since(killed_at, stack.base_url, token, kernel_ids)


def adoption(bench: Bench) -> None:
    """results["kernels_back_after_kill_s"]: kill -9 of Jupyter, then every kernel answers again (one, or more of
    bench.kernel_ids, the same ids); those kernels are shut down after."""
    stack, token, kernel_ids, runs = bench.stack, bench.token, bench.kernel_ids, bench.runs
    adopt: dict[str, dict] = {}
    for count in ([1] if bench.quick else [1, 20]):
        times = []
        for i in range(runs):
            progress(f"kill -9 of Jupyter with {count} kernel(s) {i + 1}/{runs}")
            settle(stack)
            times.append(kernels_back_after_kill(stack, token, kernel_ids[:count]))
        adopt[str(count)] = summary(times)
    bench.results["kernels_back_after_kill_s"] = adopt
    settle(stack)
    for kernel_id in kernel_ids:
        api(stack.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")


# kill -9 of the floor's Jupyter (the process whose command line names jupyter-lab) once it has run 4 s, as settle()
# waits for the stack's programs; prints when (time.monotonic(), the host's clock too).
KILL_FLOOR = r"""
import os, signal, time
pid = next(int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()
           and b"jupyter-lab" in open(f"/proc/{p}/cmdline", "rb").read())
def age():
    started = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    return float(open("/proc/uptime").read().split()[0]) - started
while age() < 4:
    time.sleep(0.1)
os.kill(pid, signal.SIGKILL)
print(time.monotonic())
"""


def floor_restart(bench: Bench) -> None:
    """results["floor_restart_s"]: the floor for kill -9 of Jupyter -> a kernel answering: stock `jupyter lab`,
    killed and started again at once, to its first 200 (the same polling from the host; no kernel to adopt)."""
    floor = Floor(bench.client, bench.image, app="lab", restarting=True)
    bench.floors.append(floor)  # removed at the end
    wait_for(lambda: answers(floor.base_url, floor.token), 120, "the restarting floor to answer", interval=0.05)
    times = []
    for i in range(bench.runs):
        progress(f"kill -9 of the floor's jupyter lab {i + 1}/{bench.runs}")
        killed_at = float(floor.container.exec_run(["python3", "-c", KILL_FLOOR]).output)
        wait_for(lambda: answers(floor.base_url, floor.token), 120, "the floor to answer again after kill -9",
                 interval=0.02)
        times.append(time.monotonic() - killed_at)
    floor_s = statistics.median(times)
    bench.results["floor_restart_s"] = {
        "lab_killed_to_first_200": summary(times),
        "ratio_one_kernel_back": bench.results["kernels_back_after_kill_s"]["1"]["median"] / floor_s}
    floor.remove()
    bench.floors.remove(floor)


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


def busy_kernel(bench: Bench) -> None:
    """results["busy_after_kill_s"]: a busy kernel across kill -9 of Jupyter."""
    progress("busy kernel across kill -9 of Jupyter")
    busy = [busy_kernel_after_kill(bench.stack, bench.token) for _ in range(1 if bench.quick else bench.runs)]
    bench.results["busy_after_kill_s"] = {key: summary([b[key] for b in busy])
                                          for key in ("api_back_s", "websocket_after_api_s")}


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


def keeper_killed(bench: Bench) -> None:
    """results["keeper_killed"]: output kept while away, then kill -9 of the keeper."""
    progress("output kept while away, then kill -9 of the keeper")
    settle(bench.stack)
    bench.results["keeper_killed"] = replay_after_keeper_kill(bench.stack, bench.token, 1000)
    settle(bench.stack)


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


def heal(bench: Bench) -> None:
    """results["healing_s"]: Jupyter killed -> API 200, tmux killed -> session back."""
    stack, runs = bench.stack, bench.runs
    jupyter_heal, tmux_heal = [], []
    for i in range(runs):
        progress(f"healing {i + 1}/{runs}")
        # Timed inside the container, from the kill to the first 200 (no docker exec in the figure).
        settle(stack)
        jupyter_heal.append(float(stack.exec("python3", "-c", JUPYTER_HEAL).stdout))
        settle(stack)
        tmux_heal.append(float(stack.exec("python3", "-c", TMUX_HEAL, "bench").stdout))
    bench.results["healing_s"] = {"jupyter_killed_to_200": summary(jupyter_heal),
                                  "tmux_killed_to_session": summary(tmux_heal)}


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


def tmux_save(bench: Bench) -> None:
    """results["tmux_save"]: tmux save of a few long windows (CPU of the saver and of tmux) and their restore."""
    stack = bench.stack
    progress("tmux save and restore, 5 windows x 10,000 lines")
    settle(stack)
    tmux_state = json.loads(stack.exec("/opt/venv/bin/python", "-c", TMUX_SAVE_RESTORE, "bench",
                                       str(bench.runs), timeout=300).stdout)
    bench.results["tmux_save"] = {
        "saver_cpu_ms": summary([1000 * s["saver_cpu"] for s in tmux_state["saves"]]),
        "tmux_server_cpu_ms": summary([1000 * s["tmux_cpu"] for s in tmux_state["saves"]]),
        "wall_ms": summary([1000 * s["wall"] for s in tmux_state["saves"]]),
        "file_mb": tmux_state["save_file_bytes"] / 1e6,
        "restore_session_s": tmux_state["restore_session_s"],
        "restore_scrollback_s": tmux_state["restore_scrollback_s"]}
