"""The records of server-side runs (runs/ID.json in the state volume): the notebook runner writes and
removes them (it is their one owner); the CLI reads them here.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

from .. import paths
from . import kernels


class RunState(StrEnum):
    """What a run is doing, or how it ended, as its record says (`state`: the string in the record's JSON)."""

    STARTING = "starting"
    WAITING = "waiting"  # its cell was sent; the kernel is busy with another client's
    RUNNING = "running"
    SAVING = "saving"  # ran; its outputs wait for the notebook to take them (a full disk)
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"  # by `run --stop`
    INTERRUPTED = "interrupted"  # by a container stop, or the end of its runner


ACTIVE = (RunState.STARTING, RunState.WAITING, RunState.RUNNING, RunState.SAVING)


def describe(record: dict) -> str:
    """'running cell 3', 'failed at cell 2 (ZeroDivisionError)', ... for people."""
    text = _describe(record)
    if record.get("resumed_from"):
        text += f" (resumed run {record['resumed_from']} after a container restart)"
    return text


def _describe(record: dict) -> str:
    state, cell = record.get("state"), record.get("cell")
    if state == RunState.DONE:
        errors = record.get("errors") or []
        return "done" + (", with errors in " + ", ".join(f"cell {e['cell']} ({e['error']})" for e in errors)
                         if errors else "")
    if state == RunState.FAILED:
        return f"failed at cell {cell}" + (f" ({record['error']})" if record.get("error") else "")
    if state == RunState.STOPPED:
        return f"stopped at cell {cell}"
    if state == RunState.INTERRUPTED:
        text = f"interrupted by {record.get('reason') or 'a container stop'} at cell {cell}"
        return text + (f", resumed as run {record['resumed_by']}" if record.get("resumed_by") else "")
    if state == RunState.WAITING:
        return f"waiting at cell {cell}: the kernel is busy with another request"
    if state == RunState.SAVING:
        return f"ran to cell {cell}; its outputs are kept and saved once the notebook can be written " \
               f"({record.get('write_error') or 'retrying'})"
    if state == RunState.RUNNING:
        return f"running cell {cell}"
    return str(state)


# --- reading --------------------------------------------------------------------------------------

def runner_alive(record: dict) -> bool:
    """The run's runner still runs: its pid, with the start time it had (pids repeat after a restart)."""
    pid = record.get("runner_pid")
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, TypeError):
        return False
    started = record.get("runner_start")
    return b"persistent_notebooks.runner" in cmdline and (started is None or paths.process_start_time(pid) == started)


def cut_short(record: dict) -> bool:
    """The run was going on when its runner ended (killed, or gone with the container): interrupted. The one place
    that says so: `runs` shows it, the next runner records it, resuming starts from it."""
    return record.get("state") in ACTIVE and not runner_alive(record)


def resumable(record: dict) -> bool:
    """A run that a container stop or crash cut short, asked to go on (not --no-resume), whose kernel
    has been started again with its saved variables since."""
    if not record.get("resume") or record.get("resumed_by"):
        return False
    if record.get("cells_total") and record.get("cells_done", 0) >= record["cells_total"]:
        return False  # every cell ran: only its outputs were left to write (kept outputs, written on)
    if record.get("state") != RunState.INTERRUPTED and not cut_short(record):
        return False
    kernel = kernels.read(record.get("kernel_id") or "")
    since = record.get("updated") or record.get("started") or 0
    return bool(kernel and (kernel.restored_at or 0) > since and kernel.alive())


def all_runs() -> list[dict]:
    """Every run record, newest first; an active one whose runner is gone is shown as interrupted."""
    runs = []
    if not paths.RUNS_DIR.is_dir():
        return runs
    for path in paths.RUNS_DIR.glob("*.json"):
        try:
            record = json.loads(path.read_text())
            record["state"]  # noqa: B018 - a record without a state is skipped
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if cut_short(record):
            record.update(state=RunState.INTERRUPTED, reason="the end of the runner (it was killed)")
        runs.append(record)
    runs.sort(key=lambda r: r.get("started") or 0, reverse=True)
    return runs


PENDING_SUFFIX = ".pending.json"


def pending_outputs() -> list[Path]:
    """Outputs a run could not write into its notebook (a full disk), kept in the state volume until they are
    (Run.keep_pending writes them, the runner that finds them after the run's own runner died writes them on)."""
    return sorted(paths.RUNS_DIR.glob("*" + PENDING_SUFFIX)) if paths.RUNS_DIR.is_dir() else []


def read_run(run_id: str) -> dict | None:
    for record in all_runs():
        if record["id"] == run_id:
            return record
    return None


def active_by_kernel() -> dict[str, dict]:
    """kernel id -> its active run, for `notebookctl kernels`."""
    return {r["kernel_id"]: r for r in all_runs() if r["state"] in ACTIVE}


