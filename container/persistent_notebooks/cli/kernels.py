"""Which kernel holds the RAM: `notebookctl kernels` (list, --json, stop).

Kernels, their sessions (notebook paths), states and clients come from the running Jupyter server's
REST API; each kernel's process comes from its record in the state volume; memory and CPU of the
kernel and everything it started are read with psutil (PSS: shared pages split among the processes
sharing them, so PSS adds up; RSS: what each one maps). What the processes hold in all is the cgroup's own count
of their anonymous and shared memory (what no reclaim frees without swap): a sum of PSS read process by process misses
what a child sharing its parent's pages (a kernel's checkpoint, forked) took with it as it exited. That is set against
the container's memory limit (its cgroup), or the host's memory when there is none.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil

from .. import jupyterapi, kernelstate, paths, settings
from ..state import kernels as kernel_records

WARN_FRACTION = 0.8
# "starting": a kernel no client ever asked anything stays there (its only status message was sent
# before anyone listened); it runs nothing, so it counts as idle since its last message.
IDLE_STATES = ("idle", "starting")
CPU_SAMPLE = 0.3  # seconds between the two CPU readings


class UsageError(Exception):
    """A mistake the user can fix, or a server that does not answer; the message says what to do."""


def parse_duration(text: str) -> float:
    try:
        return settings.parse_duration(text, "--idle-for")
    except settings.SettingError as exc:
        raise UsageError(str(exc)) from None


def api(method: str, path: str, body: dict | None = None, timeout: float = 10) -> object:
    try:
        return jupyterapi.api(method, path, body, timeout)
    except jupyterapi.ApiError as exc:
        raise UsageError(str(exc)) from None


# --- measuring -------------------------------------------------------------------------------------

def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _memory(procs: list[psutil.Process]) -> tuple[int, int]:
    pss = rss = 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        pss += getattr(info, "pss", info.rss)
        rss += info.rss
    return pss, rss


def _cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        seconds[proc.pid] = times.user + times.system
    return seconds


def gpu_memory() -> dict[int, int] | None:
    """Bytes of GPU memory per process from nvidia-smi; None where there is no nvidia-smi."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    used: dict[int, int] = {}
    for line in out.splitlines():
        pid, _, mib = (part.strip() for part in line.partition(","))
        if pid.isdigit() and mib.isdigit():
            used[int(pid)] = used.get(int(pid), 0) + int(mib) * 2**20
    return used


def memory_limit() -> tuple[int | None, int | None]:
    """(container's memory use, its limit), from cgroup v2 or v1; None where unknown or unlimited."""
    for current, limit in (("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.max"),
                           ("/sys/fs/cgroup/memory/memory.usage_in_bytes",
                            "/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            used = int(Path(current).read_text())
            text = Path(limit).read_text().strip()
        except (OSError, ValueError):
            continue
        cap = None if text == "max" or int(text) >= 2**60 else int(text)
        return used, cap
    return None, None


def held_memory() -> int | None:
    """Bytes of anonymous and shared memory charged to the container's cgroup (v2: anon + shmem; v1: rss + shmem);
    None where unknown."""
    for stat, keys in (("/sys/fs/cgroup/memory.stat", ("anon", "shmem")),
                       ("/sys/fs/cgroup/memory/memory.stat", ("rss", "shmem"))):
        try:
            values = dict(line.split() for line in Path(stat).read_text().splitlines())
            return sum(int(values[key]) for key in keys)
        except (OSError, ValueError, KeyError):
            continue
    return None


def _since(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (dt.datetime.now(dt.UTC) - when).total_seconds())


def collect() -> dict:
    kernels = api("GET", "/api/kernels") or []
    sessions = api("GET", "/api/sessions") or []
    records = {r.kernel_id: r for r in kernel_records.all_records()}
    from ..state.runs import active_by_kernel

    running = active_by_kernel()
    notebooks: dict[str, list[str]] = {}
    for session in sessions:
        kid = (session.get("kernel") or {}).get("id")
        if kid:
            notebooks.setdefault(kid, []).append(session.get("path") or session.get("name") or "")
    for kid, record in records.items():  # VSCode's sessions name no notebook: the cells it ran do
        if record.notebook:
            named = [p for p in notebooks.get(kid, []) if "-jvsc-" not in p]
            notebooks[kid] = sorted({*named, record.notebook})
    trees = {}
    for kernel in kernels:
        record = records.get(kernel["id"])
        alive = record is not None and record.alive()
        trees[kernel["id"]] = _tree(record.pid) if alive else []
    everything = list(psutil.process_iter())
    before = {kid: _cpu_seconds(t) for kid, t in trees.items()}
    t0 = time.monotonic()
    time.sleep(CPU_SAMPLE)
    elapsed = time.monotonic() - t0
    gpu = gpu_memory()
    rows = []
    for kernel in kernels:
        kid = kernel["id"]
        procs = trees[kid]
        after = _cpu_seconds(procs)
        cpu = sum(max(0.0, after[pid] - before[kid].get(pid, after[pid])) for pid in after) / elapsed
        pss, rss = _memory(procs)
        record = records.get(kid)
        idle = _since(kernel.get("last_activity")) if kernel.get("execution_state") in IDLE_STATES else None
        row = {
            "id": kid,
            "name": kernel.get("name"),
            "notebooks": notebooks.get(kid, []),
            "state": kernel.get("execution_state"),
            "connections": kernel.get("connections", 0),
            "last_activity": kernel.get("last_activity"),
            "idle_seconds": idle,
            "pid": record.pid if record else None,
            "processes": len(procs),
            "pss": pss,
            "rss": rss,
            "cpu_percent": round(100 * cpu, 1),
            "run": ({"id": running[kid].id, "notebook": running[kid].notebook, "cell": running[kid].cell,
                     "cells_done": running[kid].cells_done, "cells_total": running[kid].cells_total}
                    if kid in running else None),
        }
        row.update(saved_state(kid))
        if gpu is not None:
            row["gpu_memory"] = sum(gpu.get(p.pid, 0) for p in procs)
        rows.append(row)
    used, limit = memory_limit()
    all_pss, all_rss = _memory(everything)
    held = held_memory()
    return {
        "kernels": rows,
        "total": {
            "kernels_pss": sum(r["pss"] for r in rows),
            "kernels_rss": sum(r["rss"] for r in rows),
            "all_processes_pss": all_pss,
            "held": all_pss if held is None else held,
            "container_usage": used,
            "limit": limit,
            "host_memory": psutil.virtual_memory().total,
            "gpu_memory": sum(gpu.values()) if gpu else (0 if gpu is not None else None),
        },
    }


def saved_state(kernel_id: str) -> dict:
    """The kernel's saved variables (kernelstate): its last checkpoint, and its restore if it was restored."""
    folder = paths.KERNEL_STATE_DIR / kernel_id
    return {"checkpoint": kernelstate.read_json(folder / kernelstate.STATUS),
            "restored": kernelstate.read_json(folder / kernelstate.RESTORED)}


def saved_cell(row: dict) -> str:
    """The SAVED column: when the last checkpoint was written and how big, paused, or failed."""
    point = row.get("checkpoint")
    if not point:
        return "-"
    if point.get("paused"):
        return "paused (disk)"
    if not point.get("ok"):
        return "failed"
    age = _ago(max(0.0, time.time() - point["at"]))
    left = f", {len(point['skipped'])} not" if point.get("skipped") else ""
    return f"{age} ago {mib(point.get('size'))}{left}"


def restored_cell(row: dict) -> str:
    restored = row.get("restored")
    if not restored:
        return ""
    if restored.get("failure"):
        return " (restored empty)"
    return f" (restored {len(restored['restored'])}/{len(restored['restored']) + len(restored['skipped'])})"


def forget(kernel_id: str) -> str:
    """Drop a kernel's saved variables (it saves anew after its next cell, if it runs)."""
    matches = [p.name for p in paths.KERNEL_STATE_DIR.iterdir() if len(kernel_id) >= 4
               and p.name.startswith(kernel_id)] if paths.KERNEL_STATE_DIR.is_dir() else []
    if len(matches) != 1:
        raise UsageError(f"no saved state of kernel {kernel_id!r}" if not matches else
                         f"{kernel_id!r} matches {len(matches)} kernels' saved state; give more of the id")
    kernelstate.forget(paths.KERNEL_STATE_DIR / matches[0])
    return matches[0]


def over_warning(total: dict) -> str | None:
    """The 80 % warning: what the container's processes hold against its limit, or the host's memory."""
    cap = total["limit"] or total["host_memory"]
    what = "NOTEBOOK_MEMORY_LIMIT" if total["limit"] else "the host's memory"
    held = total["held"]
    if cap and held > WARN_FRACTION * cap:
        return (f"warning: the container's processes hold {mib(held)} of {mib(cap)} ({what}), over "
                f"{WARN_FRACTION:.0%}. Stop kernels you do not need: notebookctl kernels stop ID|PATH, or "
                "kernels stop --idle-for 2d (scripts/kernels from the host).")
    return None


def mib(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def total_lines(total: dict) -> list[str]:
    cap = total["limit"] or total["host_memory"]
    against = (f"the {mib(cap)} limit (NOTEBOOK_MEMORY_LIMIT)" if total["limit"] else
               f"the host's {mib(cap)} (no NOTEBOOK_MEMORY_LIMIT)")
    share = total["held"] / cap if cap else 0
    lines = [f"total: kernels {mib(total['kernels_pss'])} PSS ({mib(total['kernels_rss'])} RSS); all processes "
             f"{mib(total['all_processes_pss'])} PSS, holding {mib(total['held'])}, {share:.0%} of {against}; "
             f"cgroup {mib(total['container_usage'])} with page cache"]
    if total.get("gpu_memory") is not None:
        lines.append(f"GPU memory of the container's processes: {mib(total['gpu_memory'])}")
    warning = over_warning(total)
    if warning:
        lines.append(warning)
    return lines


def table(data: dict) -> str:
    rows = data["kernels"]
    gpu = any("gpu_memory" in r for r in rows)
    header = ["KERNEL", "NAME", "NOTEBOOK", "STATE", "CLIENTS", "IDLE", "PSS", "RSS", "CPU", "RUN", "SAVED"]
    header += ["GPU"] if gpu else []
    lines = [header]
    for r in rows:
        run = r.get("run")
        line = [r["id"][:8], r["name"] or "-", ", ".join(r["notebooks"]) or "(no notebook)",
                (r["state"] or "-") + restored_cell(r),
                str(r["connections"]), _ago(r["idle_seconds"]), mib(r["pss"]), mib(r["rss"]),
                f"{r['cpu_percent']:.0f}%",
                f"{run['id']} {run['cells_done']}/{run['cells_total']}" if run else "-", saved_cell(r)]
        if gpu:
            line.append(mib(r.get("gpu_memory")))
        lines.append(line)
    out = columns(lines) if rows else ["no kernels running"]
    return "\n".join(out + total_lines(data["total"]))


def columns(rows: list[list[str]]) -> list[str]:
    """Rows of cells as aligned text lines."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


# --- stopping ------------------------------------------------------------------------------------

def stop(targets: list[str], idle_for: str | None) -> list[dict]:
    """Shut kernels down through Jupyter (cleanly, their sessions too); returns what was stopped."""
    kernels = api("GET", "/api/kernels") or []
    sessions = api("GET", "/api/sessions") or []
    chosen: dict[str, str] = {}
    workspace = str(settings.WORKSPACE).rstrip("/") + "/"
    for target in targets:
        path = target[len(workspace):] if target.startswith(workspace) else target
        by_path = [s["kernel"]["id"] for s in sessions if s.get("kernel") and s.get("path") == path]
        by_id = [k["id"] for k in kernels if len(target) >= 4 and k["id"].startswith(target)]
        matches = set(by_path or by_id)
        if not matches:
            raise UsageError(f"no running kernel has the id or notebook path {target!r}; see notebookctl kernels")
        if len(matches) > 1:
            raise UsageError(f"{target!r} matches {len(matches)} kernels; give more of the id")
        chosen[matches.pop()] = target
    if idle_for is not None:
        limit = parse_duration(idle_for)
        for kernel in kernels:
            idle = _since(kernel.get("last_activity"))
            if kernel.get("execution_state") in IDLE_STATES and idle is not None and idle >= limit:
                chosen.setdefault(kernel["id"], f"idle {_ago(idle)}")
    stopped = []
    for kid, why in chosen.items():
        paths_of = []
        for session in sessions:
            if (session.get("kernel") or {}).get("id") == kid:
                api("DELETE", f"/api/sessions/{urllib.parse.quote(session['id'])}")
                paths_of.append(session.get("path"))
        api("DELETE", f"/api/kernels/{urllib.parse.quote(kid)}")
        stopped.append({"id": kid, "notebooks": paths_of, "reason": why})
    return stopped
