"""A large workspace: one search of its folders for environments, and the latency of GET /api/kernelspecs while
searches run (editors list kernelspecs whenever they connect)."""

from __future__ import annotations

import time

from harness import Bench, progress, settle, summary
from kernelclient import api
from stack import Stack

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


def measure(bench: Bench) -> None:
    """results["workspace_scan"], per workspace size."""
    bench.results["workspace_scan"] = {}
    for folders in ([2000] if bench.quick else [10_000, 100_000]):
        progress(f"workspace of {folders} folders: search time, kernelspec latency")
        settle(bench.stack)
        bench.results["workspace_scan"][str(folders)] = workspace_scan(bench.stack, bench.token, folders)
