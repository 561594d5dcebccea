"""What the benchmark's measurements share (benchmark.py, hub.py): progress lines, summaries, a kernel made ready,
reconnections timed, kernels timed back after a kill, memory as `docker stats` counts it."""

from __future__ import annotations

import statistics
import sys
import time

from kernelclient import KernelConnection, start_kernel

MIB = 2**20


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def container_memory(container) -> float:
    """Memory the cgroup holds, less reclaimable file cache (as `docker stats` counts it), MiB."""
    stats = container.stats(stream=False)["memory_stats"]
    inner = stats.get("stats", {})
    cache = inner.get("total_inactive_file", inner.get("inactive_file", 0))
    return (stats["usage"] - cache) / MIB


def ready_kernel(base_url: str, token: str) -> str:
    """Start a kernel and run one statement in it, so it is fully up; then leave it idle."""
    kernel_id = start_kernel(base_url, token)
    with KernelConnection(base_url, token, kernel_id, timeout=120) as connection:
        connection.execute("1")
    return kernel_id


def reconnects(base_url: str, token: str, kernel_id: str, tries: int) -> list[float]:
    times = []
    for _ in range(tries):
        started = time.monotonic()
        with KernelConnection(base_url, token, kernel_id) as connection:
            connection.execute("1")
        times.append(time.monotonic() - started)
    return times


KILL_JUPYTER = r"""
import subprocess, os, time
pid = subprocess.run(["supervisorctl", "-c", "/etc/persistent-notebooks/supervisord.conf", "pid", "jupyter"],
                     capture_output=True, text=True).stdout
os.kill(int(pid), 9)
print(time.time())
"""


def kernels_answering_since(killed_at: float, base_url: str, token: str, kernel_ids: list[str]) -> float:
    """Seconds from killed_at (time.time()) to every kernel answering an execute again (same ids)."""
    from concurrent.futures import ThreadPoolExecutor

    def answer(kernel_id: str) -> float:
        while True:
            try:
                with KernelConnection(base_url, token, kernel_id, timeout=10) as connection:
                    if connection.execute("1")["result"] == "1":
                        return time.time()
            except Exception:  # noqa: BLE001 - the server is not back yet
                time.sleep(0.02)

    with ThreadPoolExecutor(len(kernel_ids)) as pool:
        return max(pool.map(answer, kernel_ids)) - killed_at


def fmt(s: dict, unit: str = "s") -> str:
    return f"{s['median']:.3f} {unit} (min {s['min']:.3f}, max {s['max']:.3f}, n={s['n']})"
