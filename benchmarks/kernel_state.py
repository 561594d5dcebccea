"""Kernels across container restarts (kernelstate): snapshot and restore throughput beside the state volume's
raw disk (dd, same run), restart to a kernel answering with its variables beside a plain restart, the per-cell
cost of checkpoints beside the same kernel without them, and what of a data-science namespace comes back.
"""

from __future__ import annotations

import contextlib
import json
import re
import statistics
import subprocess
import time

from kernelclient import KernelConnection, api
from stack import Stack, wait_for

STATE = "/var/lib/persistent-notebooks"
# Run in the kernel: its own KernelState times a snapshot of the namespace into an empty folder (every
# byte written), then a load of it back; prints JSON. Defined and removed in one cell.
TIME_SAVE_LOAD = """
def _pn_time():
    import gc, json, time
    from persistent_notebooks import kernelstate as ks
    state = next(o for o in gc.get_objects() if isinstance(o, ks.KernelState))
    names = ks.user_variables(get_ipython())
    with state.store.locked():
        for path in state.store.dir.glob("c-*"):
            path.unlink()
    started = time.monotonic()
    state.checkpoint(names, "stop", 1, [])
    saved = time.monotonic() - started
    status = json.loads((state.store.dir / ks.STATUS).read_text())
    started = time.monotonic()
    back = {}
    ks.load(state.store, back)
    loaded = time.monotonic() - started
    print(json.dumps({"save_s": saved, "load_s": loaded, "bytes": status["size"], "variables": len(back)}))
_pn_time()
del _pn_time
"""
FRESH_READ = """
import os, sys, time
started = time.monotonic()
data = bytearray(os.path.getsize(sys.argv[1]))
with open(sys.argv[1], "rb", buffering=0) as f:
    f.readinto(data)
print(time.monotonic() - started)
"""
# A data scientist's namespace: what of it comes back (needs pandas, scikit-learn, matplotlib: full runs only).
DATA_SCIENCE_PACKAGES = ("pandas==2.3.3", "scikit-learn==1.7.2", "matplotlib==3.10.7")
DATA_SCIENCE = """
import numpy as np, pandas as pd, sqlite3, threading, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from sklearn.linear_model import LogisticRegression
frame = pd.DataFrame({"x": np.arange(1000), "y": np.random.rand(1000), "label": ["a", "b"] * 500})
array = np.random.rand(500, 20)
labels = (array[:, 0] > 0.5).astype(int)
model = LogisticRegression().fit(array, labels)
fig, ax = plt.subplots()
ax.plot(frame["x"], frame["y"])
square = lambda v: v * v
def scale(v, k=2):
    return v * k
gen = (i for i in range(10))
handle = open("/tmp/ds.txt", "w")
worker = threading.Thread(target=print)
db = sqlite3.connect(":memory:")
"""
DATA_SCIENCE_NAMES = ("np", "pd", "sqlite3", "threading", "matplotlib", "plt", "LogisticRegression", "frame",
                      "array", "labels", "model", "fig", "ax", "square", "scale", "gen", "handle", "worker", "db")


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def dd_floor(stack: Stack, mib: int) -> dict:
    """Raw sequential write (fsync) and read of the state volume, MB/s, as dd reports them."""
    path = f"{STATE}/benchmark.dd"
    wrote = stack.exec("dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}", "conv=fsync", timeout=600).stderr
    read = stack.exec("dd", f"if={path}", "of=/dev/null", "bs=1M", timeout=600).stderr
    # What any restore needs at least: the file read into new memory (dd reuses one small buffer; here every
    # page is new, as a restored variable's are).
    fresh = float(stack.exec("python3", "-c", FRESH_READ, path, timeout=600).stdout)
    stack.exec("rm", "-f", path)

    def rate(text: str) -> float:  # "... copied, 1.2 s, 890 MB/s"
        seconds = float(re.search(r"copied, ([\d.]+) s", text).group(1))
        return mib * 2**20 / seconds / 1e6
    return {"write_mb_s": rate(wrote), "read_mb_s": rate(read), "read_into_new_memory_mb_s": mib * 2**20 / fresh / 1e6}


def kernel_with(stack: Stack, token: str, code: str, notebook: str) -> str:
    kernel_id = api(stack.base_url, token, "/api/sessions", "POST", {
        "path": notebook, "name": notebook, "type": "notebook", "kernel": {"name": "python3"}})["kernel"]["id"]
    with KernelConnection(stack.base_url, token, kernel_id, timeout=600) as kernel:
        out = kernel.execute(code)
    assert out["error"] is None, out
    return kernel_id


def save_load(stack: Stack, token: str, kernel_id: str) -> dict:
    with KernelConnection(stack.base_url, token, kernel_id, timeout=600) as kernel:
        out = kernel.execute(TIME_SAVE_LOAD)
    assert out["error"] is None, out
    figures = json.loads(out["stdout"])
    figures["save_mb_s"] = figures["bytes"] / figures["save_s"] / 1e6
    figures["load_mb_s"] = figures["bytes"] / figures["load_s"] / 1e6
    return figures


def restart_to_answers(stack: Stack, token: str, checks: dict[str, tuple[str, str]]) -> dict:
    """`docker compose restart`, then the time to the first 200 and to every kernel answering its check."""
    started = time.monotonic()
    stack.compose("restart", timeout=300)
    wait_for(lambda: stack.api_status(token) == 200, 300, "the API after the restart", interval=0.05)
    first_200 = time.monotonic() - started
    for kernel_id, (code, expected) in checks.items():
        with KernelConnection(stack.base_url, token, kernel_id, timeout=300) as kernel:
            out = kernel.execute(code)
        assert out["stdout"].strip() == expected, f"kernel {kernel_id}: {out}\n{stack.logs()[-6000:]}"
    return {"first_200_s": first_200, "kernels_answer_s": time.monotonic() - started}


def cell_round_trips(stack: Stack, token: str, kernel_id: str, cells: int, code: str = "x = 1") -> list[float]:
    times = []
    with KernelConnection(stack.base_url, token, kernel_id) as kernel:
        for _ in range(cells):
            started = time.monotonic()
            kernel.execute(code)
            times.append(1000 * (time.monotonic() - started))
    return times


def checkpoints_off(stack: Stack, token: str, kernel_id: str) -> None:
    """The floor: the same kernel with its cell hooks removed (no checkpoint after cells)."""
    with KernelConnection(stack.base_url, token, kernel_id) as kernel:
        out = kernel.execute("def _pn_off():\n    import gc\n    from persistent_notebooks import kernelstate as ks\n"
                             "    st = next(o for o in gc.get_objects() if isinstance(o, ks.KernelState))\n"
                             "    get_ipython().events.unregister('post_run_cell', st.post_run_cell)\n"
                             "    get_ipython().events.unregister('pre_run_cell', st.pre_run_cell)\n"
                             "_pn_off()\ndel _pn_off")
    assert out["error"] is None, out


def data_science(stack: Stack, token: str) -> dict:
    """The share of a realistic namespace that comes back through a restart (an environment of its own)."""
    stack.exec("notebookctl", "env", "create", "bench-ds", *DATA_SCIENCE_PACKAGES, timeout=900)
    kernel_id = api(stack.base_url, token, "/api/sessions", "POST", {
        "path": "ds.ipynb", "name": "ds.ipynb", "type": "notebook", "kernel": {"name": "bench-ds"}})["kernel"]["id"]
    with KernelConnection(stack.base_url, token, kernel_id, timeout=600) as kernel:
        out = kernel.execute(DATA_SCIENCE)
    assert out["error"] is None, out
    stack.compose("restart", timeout=300)
    stack.wait_healthy()
    with KernelConnection(stack.base_url, token, kernel_id, timeout=600) as kernel:
        out = kernel.execute(f"print(sorted(n for n in {DATA_SCIENCE_NAMES!r} if n in globals()))")
    back = json.loads(out["stdout"].replace("'", '"'))
    api(stack.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")
    return {"restored": back, "not_restored": sorted(set(DATA_SCIENCE_NAMES) - set(back)),
            "fraction": len(back) / len(DATA_SCIENCE_NAMES), "notice": out["stderr"].strip()}


def measure(stack: Stack, token: str, quick: bool) -> dict:
    big_mib = 64 if quick else 1024
    small_kernels = 3 if quick else 10
    cells = 30 if quick else 300
    results: dict = {"big_mib": big_mib, "floor_dd": dd_floor(stack, big_mib)}
    big = kernel_with(stack, token, f"blob = bytearray({big_mib} << 20)\nblob[::4096] = b'x' * len(blob[::4096])",
                      "bench-big.ipynb")
    results["big"] = save_load(stack, token, big)
    many = kernel_with(stack, token, "rows = [{'id': i, 'name': f'row {i}', 'score': i * 0.5} "
                                     f"for i in range({200_000 if quick else 2_000_000})]", "bench-many.ipynb")
    results["many_small"] = save_load(stack, token, many)
    api(stack.base_url, token, f"/api/kernels/{many}", "DELETE")
    # Restart to answers: one big kernel, then several small ones.
    results["restart_big"] = restart_to_answers(stack, token, {big: ("print(len(blob), blob[4096])",
                                                                     f"{big_mib << 20} 120")})
    api(stack.base_url, token, f"/api/kernels/{big}", "DELETE")
    smalls = [kernel_with(stack, token, f"v = {i}", f"bench-small-{i}.ipynb") for i in range(small_kernels)]
    results["restart_small"] = restart_to_answers(stack, token, {k: ("print(v)", str(i)) for i, k in enumerate(smalls)})
    results["restart_small"]["kernels"] = small_kernels
    # Per cell: a trivial cell with checkpoints after cells, and the same kernel without.
    on = cell_round_trips(stack, token, smalls[0], cells)
    checkpoints_off(stack, token, smalls[0])
    off = cell_round_trips(stack, token, smalls[0], cells)
    results["trivial_cell_ms"] = {"checkpoints": summary(on), "without": summary(off),
                                  "added_median_ms": statistics.median(on) - statistics.median(off)}
    for kernel_id in smalls:
        api(stack.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")
    # A cell that changes a big array in place: its round trip, and how long its checkpoint takes (the next
    # one waits four times that: checkpoints use at most a fifth of the time).
    changer = kernel_with(stack, token, f"blob = bytearray({big_mib} << 20)", "bench-change.ipynb")
    trips = cell_round_trips(stack, token, changer, 5, "blob[0] = (blob[0] + 1) % 256")
    status = wait_for(lambda: (lambda c: c if c.get("ok") else None)(json.loads(
        stack.exec("cat", f"{STATE}/kernel-state/{changer}/checkpoint.json").stdout)), 120, "a checkpoint")
    results["big_change"] = {"round_trip_ms": summary(trips), "checkpoint_s": status["took"],
                             "next_checkpoint_after_s": 4 * status["took"]}
    api(stack.base_url, token, f"/api/kernels/{changer}", "DELETE")
    results["data_science"] = None if quick else data_science(stack, token)
    return results


@contextlib.contextmanager
def stack_of_its_own(image: str | None):
    """A stack for one part of the benchmark (built from this checkout unless an image is given), gone after;
    yields (stack, token, workspace)."""
    import os
    import secrets
    import tempfile
    from pathlib import Path

    env_file = Path(tempfile.mkstemp(prefix="bench-", suffix=".env")[1])
    workspace = Path(tempfile.mkdtemp(prefix="bench-workspace-"))
    if os.getuid() == 0:
        os.chown(workspace, 1000, 1000)
    uid = str(os.getuid() or 1000)
    built = image is None
    image = image or "persistent-notebooks:benchmark"
    stack = Stack(workspace, image, env_file, HOST_UID=uid, HOST_GID=uid, TMUX_SESSION="bench",
                  JUPYTER_TOKEN=secrets.token_hex(24))
    try:
        if built:
            stack.compose("build", timeout=1800)
        stack.up()
        stack.wait_healthy()
        yield stack, stack.variables["JUPYTER_TOKEN"], workspace
    finally:
        stack.down()
        if built:
            subprocess.run(["docker", "image", "rm", image], capture_output=True)
        env_file.unlink(missing_ok=True)
        subprocess.run(["rm", "-rf", str(workspace)])


def run_alone(image: str | None, quick: bool) -> dict:
    """The figures on a stack of their own (scripts/benchmark --kernel-state)."""
    with stack_of_its_own(image) as (stack, token, _):
        return measure(stack, token, quick)


def table(r: dict) -> str:
    big, many, floor = r["big"], r["many_small"], r["floor_dd"]
    lines = [
        "| kernel state (kernelstate) | figure | floor in the same run |",
        "|---|---|---|",
        f"| snapshot, {r['big_mib']} MiB bytearray | {big['save_mb_s']:.0f} MB/s ({big['save_s']:.2f} s) | dd write "
        f"(fsync) {floor['write_mb_s']:.0f} MB/s: {big['save_mb_s'] / floor['write_mb_s']:.2f} x |",
        f"| restore, {r['big_mib']} MiB bytearray | {big['load_mb_s']:.0f} MB/s ({big['load_s']:.2f} s) | read into "
        f"new memory {floor['read_into_new_memory_mb_s']:.0f} MB/s: "
        f"{big['load_mb_s'] / floor['read_into_new_memory_mb_s']:.2f} x (dd read, cached: "
        f"{floor['read_mb_s']:.0f} MB/s) |",
        f"| snapshot, many small objects ({many['bytes'] / 1e6:.0f} MB pickled) | {many['save_mb_s']:.0f} MB/s "
        f"({many['save_s']:.2f} s) | {many['save_mb_s'] / floor['write_mb_s']:.2f} x dd write |",
        f"| restore, many small objects | {many['load_mb_s']:.0f} MB/s ({many['load_s']:.2f} s) | "
        f"{many['load_mb_s'] / floor['read_into_new_memory_mb_s']:.2f} x read into new memory |",
        f"| restart -> kernel of {r['big_mib']} MiB answers with it | {r['restart_big']['kernels_answer_s']:.1f} s | "
        f"first 200 {r['restart_big']['first_200_s']:.1f} s |",
        f"| restart -> {r['restart_small']['kernels']} small kernels answer | "
        f"{r['restart_small']['kernels_answer_s']:.1f} s | first 200 {r['restart_small']['first_200_s']:.1f} s |",
        f"| trivial cell round trip, checkpoints after cells | {r['trivial_cell_ms']['checkpoints']['median']:.1f} ms "
        f"(+{r['trivial_cell_ms']['added_median_ms']:.1f} ms) | without: "
        f"{r['trivial_cell_ms']['without']['median']:.1f} ms |",
        f"| cell changing {r['big_mib']} MiB in place: round trip; its checkpoint | "
        f"{r['big_change']['round_trip_ms']['median']:.0f} ms; {r['big_change']['checkpoint_s']:.2f} s | next "
        f"checkpoint no sooner than {r['big_change']['next_checkpoint_after_s']:.2f} s after |",
    ]
    ds = r.get("data_science")
    if ds:
        lines.append(f"| data-science namespace back after restart | {ds['fraction']:.0%} | not: "
                     f"{', '.join(ds['not_restored'])} |")
    return "\n".join(lines)
