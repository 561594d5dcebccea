"""Idle cost beside the floor: CPU of the whole container while nothing is asked of it, its memory, and the
memory of each process of the stack (what runs besides Jupyter)."""

from __future__ import annotations

import time

from harness import Bench, container_memory, progress


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


def measure(bench: Bench) -> None:
    """results["idle_cpu_percent"] (whole cgroups, no kernels, nobody connected) and the idle part of
    results["memory"] (kernels.memory adds the kernels' part)."""
    stack, floor, stack_container = bench.stack, bench.floor, bench.stack_container
    window = 5 if bench.quick else 60
    progress(f"idle CPU over {window} s, stack and floor")
    stack.wait_healthy()
    bench.results["idle_cpu_percent"] = {
        **idle_cpu({"stack": stack_container, "floor": floor.container}, window), "seconds": window}
    progress("idle memory")
    processes = process_memory(stack_container)
    overhead = [v for k, v in processes.items() if k not in ("jupyter server", "kernel", "healthcheck probe")]
    besides = sum(v["pss_mib"] for v in overhead)
    besides_rss = sum(v["rss_mib"] for v in overhead)
    bench.results["memory"] = {"stack_container_mib": container_memory(stack_container),
                               "floor_container_mib": container_memory(floor.container),
                               "processes": processes, "besides_jupyter_pss_mib": besides,
                               "besides_jupyter_rss_mib": besides_rss}
