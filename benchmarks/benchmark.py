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
import subprocess
import sys
import tempfile
from pathlib import Path

# Each section is a module of this folder over the shared harness (harness.Bench: one run's state); report prints
# the table. This script parses the options, runs the sections in order and writes the figures.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import docker  # noqa: E402
import environments  # noqa: E402
import healing  # noqa: E402
import idle  # noqa: E402
import image  # noqa: E402
import kernel_state  # noqa: E402
import kernels  # noqa: E402
import report  # noqa: E402
import runs  # noqa: E402
import startup  # noqa: E402
import workspace_scan  # noqa: E402
from harness import Bench, progress, settle  # noqa: E402
from stack import REPO  # noqa: E402


def new_bench(args: argparse.Namespace) -> Bench:
    """The run's shared state: a Docker client, an env file and a workspace of its own, the machine's description."""
    client = docker.from_env()
    env_file = Path(tempfile.mkstemp(prefix="bench-", suffix=".env")[1])
    workspace = Path(tempfile.mkdtemp(prefix="bench-workspace-"))
    if os.getuid() == 0:
        os.chown(workspace, 1000, 1000)
    results: dict = {"quick": args.quick, "machine": {
        "platform": platform.platform(), "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "docker": client.version()["Version"]}}
    return Bench(client=client, args=args, workspace=workspace, env_file=env_file, uid=str(os.getuid() or 1000),
                 image=args.image, results=results)


def clean_up(bench: Bench) -> None:
    """Every stack down and floor removed, the image built removed (unless --keep-image), the temporary files."""
    progress("cleaning up")
    for stack in bench.stacks:
        stack.down()
    for floor in bench.floors:
        floor.remove()
    if bench.args.image is None and not bench.args.keep_image:
        subprocess.run(["docker", "image", "rm", image.BUILT], capture_output=True)
    bench.env_file.unlink(missing_ok=True)
    subprocess.run(["rm", "-rf", str(bench.workspace)])


def run(args: argparse.Namespace) -> dict:
    """Every section in turn, on one stack and floor from start-up on (the order matters: each leaves the stack as
    the next one finds it); the figures as written to the JSON."""
    bench = new_bench(args)
    try:
        image.build(bench)
        startup.measure(bench)  # leaves bench.stack and bench.floor up
        idle.measure(bench)
        kernels.measure(bench)  # memory per kernel (bench.kernel_ids), reconnect, throughput, output while away
        healing.adoption(bench)  # kill -9 of Jupyter with those kernels, then they are shut down
        healing.floor_restart(bench)  # ... and its floor: stock jupyter lab killed and started again
        healing.busy_kernel(bench)
        workspace_scan.measure(bench)
        healing.keeper_killed(bench)
        healing.heal(bench)
        healing.tmux_save(bench)
        environments.measure(bench)
        kernels.listed_memory(bench)
        runs.measure(bench)
        # kernels across container restarts (benchmarks/kernel_state.py)
        progress("kernel state: snapshot and restore beside dd, restarts, per-cell checkpoints")
        settle(bench.stack)
        bench.results["kernel_state"] = kernel_state.measure(bench.stack, bench.token, args.quick)
        image.measure(bench)
    finally:
        clean_up(bench)
    return bench.results


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
            figures = runs.figures(stack, token, workspace, args.runs, args.quick)
        Path(args.json).write_text(json.dumps({"runs": figures}, indent=2) + "\n")
        print(runs.runs_table(figures))
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
    print(report.table(results))
    print(f"\n(JSON: {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
