"""What the benchmark's measurements share (its section modules, hub.py): one run's state (Bench), progress lines,
summaries, a kernel made ready, reconnections timed, kernels timed back after a kill, memory as `docker stats`
counts it."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from kernelclient import KernelConnection, start_kernel
from stack import Stack, wait_for

MIB = 2**20


@dataclass
class Bench:
    """One run of benchmark.py, as its sections share it: each section's module reads what it needs and fills its
    part of results; every stack and floor made is listed in stacks and floors, removed at the end."""

    client: docker.DockerClient
    args: argparse.Namespace
    workspace: Path
    env_file: Path
    uid: str
    image: str | None  # the image measured (args.image, or the one image.build makes)
    results: dict
    stacks: list[Stack] = field(default_factory=list)
    floors: list = field(default_factory=list)  # startup.Floor
    # From start-up on: the stack the later sections measure, the bare server beside it, and what they use of them.
    stack: Stack | None = None
    floor: Any = None  # startup.Floor
    token: str = ""
    stack_container: Any = None  # the stack's container (docker SDK)
    kernel_ids: list[str] = field(default_factory=list)  # idle kernels started for memory, used until adoption

    @property
    def quick(self) -> bool:
        return self.args.quick

    @property
    def runs(self) -> int:
        """Runs per timing."""
        return 1 if self.args.quick else self.args.runs

    @property
    def tries(self) -> int:
        """Reconnections timed."""
        return 3 if self.args.quick else 20

    def new_stack(self, **variables: str) -> Stack:
        """A stack of the image on the run's workspace (not started), cleaned up at the end."""
        stack = Stack(self.workspace, self.image, self.env_file, HOST_UID=self.uid, HOST_GID=self.uid,
                      TMUX_SESSION="bench", **variables)
        self.stacks.append(stack)
        return stack


def settle(stack: Stack) -> None:
    """Wait until every program is RUNNING past its startsecs, so one event is measured at a time."""
    wait_for(stack.settled, 60, "the programs to settle", interval=0.2)


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
print(time.monotonic())
"""


def kernels_answering_since(killed_at: float, base_url: str, token: str, kernel_ids: list[str]) -> float:
    """Seconds from killed_at (time.monotonic() in the container: the host's clock too, never stepped back) to every
    kernel answering an execute again (same ids)."""
    from concurrent.futures import ThreadPoolExecutor

    def answer(kernel_id: str) -> float:
        while True:
            try:
                with KernelConnection(base_url, token, kernel_id, timeout=10) as connection:
                    if connection.execute("1")["result"] == "1":
                        return time.monotonic()
            except Exception:  # noqa: BLE001 - the server is not back yet
                time.sleep(0.02)

    with ThreadPoolExecutor(len(kernel_ids)) as pool:
        return max(pool.map(answer, kernel_ids)) - killed_at


def fmt(s: dict, unit: str = "s") -> str:
    return f"{s['median']:.3f} {unit} (min {s['min']:.3f}, max {s['max']:.3f}, n={s['n']})"
