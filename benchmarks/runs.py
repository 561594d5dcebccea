"""Server-side runs (notebookctl run): the cost per cell beside the same cells over one websocket, at several
notebook sizes, output to the file, bytes written, the runner's peak memory, saves through Jupyter during a run."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from harness import MIB, Bench, fmt, progress, summary
from kernelclient import KernelConnection, api
from stack import SUPERVISORCTL, Stack, wait_for


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
    # From a line printed in a long cell to the file holding it (read on the host, as an editor would). The kernel
    # prints CLOCK_MONOTONIC, which a container shares with the host (no time namespace) and which no adjustment of
    # the wall clock moves.
    write_notebook(workspace, "bench-latency.ipynb", [
        "import time\nprint(repr(time.monotonic()), flush=True)\ntime.sleep(3)"] * runs)
    out = stack.exec("notebookctl", "run", "bench-latency.ipynb").stdout
    run_id = out.split()[1].rstrip(":")
    latency, seen = [], set()
    deadline = time.monotonic() + 30 + 4 * runs
    while len(latency) < runs and time.monotonic() < deadline:
        try:
            nb = json.loads((workspace / "bench-latency.ipynb").read_text())
        except ValueError:
            raise AssertionError("the notebook was read half-written") from None
        now = time.monotonic()
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


def figures(stack: Stack, token: str, workspace: Path, runs: int, quick: bool) -> dict:
    """runs_figures() as the benchmark and --runs-only run it: a short pass with quick."""
    return runs_figures(stack, token, workspace, runs, seconds=5 if quick else 30,
                        sizes=(50, 500) if quick else (50, 500, 5000))


def measure(bench: Bench) -> None:
    """results["runs"]."""
    progress("server-side runs")
    bench.results["runs"] = figures(bench.stack, bench.token, bench.workspace, bench.runs, bench.quick)
