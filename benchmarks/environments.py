"""Environments: `notebookctl env create` of one package, uv's cache empty (cold) or filled (warm), as the user
runs it."""

from __future__ import annotations

import time

from harness import Bench, progress, summary

ENV_PACKAGE = "iniconfig==2.1.0"  # small, pure Python, not in the image


def measure(bench: Bench) -> None:
    """results["env_create_s"]."""
    stack, runs = bench.stack, bench.runs
    cold, warm = [], []
    for i in range(runs):
        progress(f"env create with one package, cold and warm {i + 1}/{runs}")
        stack.exec("sh", "-c", 'rm -rf "$UV_CACHE_DIR"')
        for times in (cold, warm):
            started = time.monotonic()
            stack.exec("notebookctl", "env", "create", "bench-env", ENV_PACKAGE, timeout=300)
            times.append(time.monotonic() - started)
            stack.exec("notebookctl", "env", "remove", "bench-env")
    bench.results["env_create_s"] = {"package": ENV_PACKAGE, "cold": summary(cold), "warm": summary(warm)}
