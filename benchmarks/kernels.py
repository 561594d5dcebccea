"""Kernels beside the floor: memory per idle kernel, reconnect, execute throughput (JupyterLab's cells too, and
without output kept while away), the output kept while away replayed, bursts; and the kernel list's memory figures."""

from __future__ import annotations

import json
import statistics
import time

from harness import Bench, container_memory, progress, ready_kernel, reconnects, summary
from idle import process_memory
from kernelclient import KernelConnection, api, start_kernel
from stack import Stack, wait_for


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


def replay_time(stack: Stack, token: str, lines: int) -> tuple[float, int]:
    """Seconds from connecting to having every line a kernel printed (one message each) while away."""
    kernel_id = ready_kernel(stack.base_url, token)
    with KernelConnection(stack.base_url, token, kernel_id) as away:
        msg_id = away.submit(f"import time\ntime.sleep(0.5)\nfor i in range({lines}):\n    print(i, flush=True)")
        # Gone once the kernel has the cell (its first message), before it prints: this measures the replay. (A cell
        # sent just as its client leaves reaches the kernel too: tests/test_away.py.)
        wait_for(lambda: away.follow(msg_id, seconds=0.2)["messages"], 120, "the cell to reach the kernel")
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


def memory(bench: Bench) -> None:
    """The container's memory with idle kernels (bench.kernel_ids, kept for the later sections), into
    results["memory"]; the keeper's with one, as it runs only while kernels do."""
    stack, token, stack_container = bench.stack, bench.token, bench.stack_container
    memory = bench.results["memory"]
    memory["with_kernels_mib"] = {}
    kernel_ids = bench.kernel_ids
    for count in ([1] if bench.quick else [1, 10, 20]):
        progress(f"memory with {count} idle kernel(s)")
        while len(kernel_ids) < count:
            kernel_ids.append(ready_kernel(stack.base_url, token))
        memory["with_kernels_mib"][str(count)] = container_memory(stack_container)
        if count == 1:  # the keeper runs only while kernels do: what it costs then
            keeper = process_memory(stack_container).get("kernel keeper", {"pss_mib": 0.0, "rss_mib": 0.0})
            memory["keeper_with_a_kernel"] = {"pss_mib": keeper["pss_mib"], "rss_mib": keeper["rss_mib"]}
    top = max(int(k) for k in memory["with_kernels_mib"])
    memory["per_kernel_mib"] = (memory["with_kernels_mib"][str(top)] - memory["stack_container_mib"]) / top


def reconnect_and_throughput(bench: Bench) -> None:
    """results["reconnect_s"] and results["throughput_exec_per_s"], on one kernel each side; the stack without
    output kept while away on a stack of its own (NOTEBOOK_AWAY_BUFFER=0)."""
    stack, token, floor, kernel_ids = bench.stack, bench.token, bench.floor, bench.kernel_ids
    progress(f"reconnect x{bench.tries}, stack and floor")
    floor_kernel = ready_kernel(floor.base_url, floor.token)
    stack_times = reconnects(stack.base_url, token, kernel_ids[0], bench.tries)
    floor_times = reconnects(floor.base_url, floor.token, floor_kernel, bench.tries)
    bench.results["reconnect_s"] = {"stack": summary(stack_times), "floor": summary(floor_times),
                                    "ratio": statistics.median(stack_times) / statistics.median(floor_times)}
    seconds = 2 if bench.quick else 10
    progress(f"throughput {seconds} s, stack and floor")
    stack_rate = throughput(stack.base_url, token, kernel_ids[0], seconds)
    floor_rate = throughput(floor.base_url, floor.token, floor_kernel, seconds)
    progress(f"throughput {seconds} s, JupyterLab-shaped cells (handed to the runner)")
    lab_rate = lab_throughput(stack.base_url, token, seconds)
    progress(f"throughput {seconds} s, stack without output kept while away (NOTEBOOK_AWAY_BUFFER=0)")
    plain = bench.new_stack(NOTEBOOK_AWAY_BUFFER="0")
    plain.up()
    plain.wait_healthy()
    plain_token = plain.token()
    plain_rate = throughput(plain.base_url, plain_token, ready_kernel(plain.base_url, plain_token), seconds)
    plain.down()
    bench.results["throughput_exec_per_s"] = {
        "stack": stack_rate, "floor": floor_rate, "ratio": stack_rate / floor_rate,
        "stack_without_away": plain_rate, "away_ratio": stack_rate / plain_rate,
        "jupyterlab_cells": lab_rate, "jupyterlab_ratio": lab_rate / stack_rate}


def away(bench: Bench) -> None:
    """results["away"]: the replay of lines kept while away, one message each; results["burst"]: what a client
    gets of a burst of such lines, connected and away, stack and floor."""
    stack, token, floor = bench.stack, bench.token, bench.floor
    lines = 1000 if bench.quick else 10_000
    progress(f"replay of {lines} lines kept while away")
    replay = [replay_time(stack, token, lines) for _ in range(1 if bench.quick else 3)]
    assert all(n == lines for _, n in replay), f"replay lost lines: {replay}"
    bench.results["away"] = {"lines": lines, "replay_s": summary([t for t, _ in replay])}
    progress(f"bursts of {lines} one-message lines, connected and away, stack and floor")
    bench.results["burst"] = {"lines": lines, **{
        f"{where}_{mode}": burst(target.base_url, target.token if where == "floor" else token, lines,
                                 away=mode == "away")
        for where, target in (("stack", stack), ("floor", floor)) for mode in ("connected", "away")}}


def measure(bench: Bench) -> None:
    """Memory per kernel, reconnect and throughput, output while away, in that order (on the same kernels)."""
    memory(bench)
    reconnect_and_throughput(bench)
    away(bench)


def listed_memory(bench: Bench) -> None:
    """results["kernels_list"]: the kernel list's memory figures of a kernel holding a large value, against the
    kernel's own smaps_rollup, and the command's time."""
    stack, token = bench.stack, bench.token
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
    bench.results["kernels_list"] = {"pss_mib": row["pss"] / 2**20, "rss_mib": row["rss"] / 2**20,
                                     "smaps_pss_mib": kib["Pss"] / 1024, "smaps_rss_mib": kib["Rss"] / 1024,
                                     "command_s": took}
    api(stack.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")
