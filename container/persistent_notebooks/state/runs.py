"""The records of server-side runs (runs/ID.json in the state volume): the notebook runner writes and
removes them (it is their one owner); the CLI reads them here. RunRecord is their one shape, in memory and in JSON.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
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
RUNNER_GONE = "the end of the runner (it was killed)"  # the reason of a run its runner's end cut short


@dataclass(slots=True)
class RunRecord:
    """One run as its runner keeps it, updating it as the run goes on; its JSON is the file runs/ID.json."""

    id: str
    notebook: str  # relative to the workspace
    state: RunState
    path: str | None = None  # the notebook's absolute path
    kernel_id: str | None = None
    kernel_name: str | None = None
    selection: str | None = None  # which cells, as asked ("all", "3-", "2-5", "cells sent by JupyterLab", ...)
    keep_going: bool = False  # on after a cell's error
    cells_total: int = 0
    cells_done: int = 0
    cell: int | str | None = None  # the cell going on (or where it ended): its number, or a cell id not saved yet
    cell_index: int | None = None  # ... counted in the run's own cells, from 1
    last_cell: int | None = None  # the number of its last cell: where a resumed run ends
    reason: str | None = None  # what interrupted it
    error: str | None = None  # why it failed
    errors: list[dict] = field(default_factory=list)  # {"cell", "error"} of each cell that raised (keep_going)
    started: float | None = None
    ended: float | None = None
    updated: float | None = None  # the record's last write
    runner_pid: int | None = None
    runner_start: int | None = None  # the runner's start time (paths.process_start_time): pids repeat
    resume: bool = False  # goes on after a container restart cuts it short
    resumed_from: str | None = None  # the id of the run this one goes on from
    resumed_by: str | None = None  # the id of the run that went on from this one ("-": none could)
    resume_error: str | None = None  # why it could not go on
    queued: list[dict] = field(default_factory=list)  # a follow's cells left at a container stop: {"id", "source"}
    saved_to: str | None = None  # a side file holding its outputs, when the notebook could not take them all
    write_error: str | None = None  # why its outputs are not written yet
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: object) -> RunRecord:
        """The record from its JSON (as this version or an earlier one wrote it); keys this version does not know
        are ignored. ValueError for one without an id, a notebook or a state this version knows, or whose notes,
        errors or queued cells are not a list."""
        if not isinstance(data, dict):
            raise ValueError(f"a run record is a JSON object, not a {type(data).__name__}")
        for key in ("id", "notebook", "state"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ValueError(f"a run record without its {key!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known and v is not None}  # (null: the default)
        values["state"] = RunState(data["state"])  # ValueError for a state this version does not know
        for key in ("notes", "errors", "queued"):
            if not isinstance(values.get(key, []), list):
                raise ValueError(f"a run record whose {key!r} is not a list")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    def describe(self) -> str:
        """'running cell 3', 'failed at cell 2 (ZeroDivisionError)', ... for people."""
        text = self._describe()
        if self.resumed_from:
            text += f" (resumed run {self.resumed_from} after a container restart)"
        return text

    def _describe(self) -> str:
        state, cell = self.state, self.cell
        if state == RunState.DONE:
            return "done" + (", with errors in " + ", ".join(f"cell {e['cell']} ({e['error']})" for e in self.errors)
                             if self.errors else "")
        if state == RunState.FAILED:
            return f"failed at cell {cell}" + (f" ({self.error})" if self.error else "")
        if state == RunState.STOPPED:
            return f"stopped at cell {cell}"
        if state == RunState.INTERRUPTED:
            text = f"interrupted by {self.reason or 'a container stop'} at cell {cell}"
            return text + (f", resumed as run {self.resumed_by}" if self.resumed_by else "")
        if state == RunState.WAITING:
            return f"waiting at cell {cell}: the kernel is busy with another request"
        if state == RunState.SAVING:
            return f"ran to cell {cell}; its outputs are kept and saved once the notebook can be written " \
                   f"({self.write_error or 'retrying'})"
        if state == RunState.RUNNING:
            return f"running cell {cell}"
        return str(state)

    def runner_alive(self) -> bool:
        """The run's runner still runs: its pid, with the start time it had (pids repeat after a restart)."""
        pid = self.runner_pid
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, TypeError):
            return False
        return b"persistent_notebooks.runner" in cmdline and (self.runner_start is None
                                                              or paths.process_start_time(pid) == self.runner_start)

    def cut_short(self) -> bool:
        """The run was going on when its runner ended (killed, or gone with the container): interrupted. The one
        place that says so: `runs` shows it, the next runner records it, resuming starts from it."""
        return self.state in ACTIVE and not self.runner_alive()

    def mark_cut_short(self) -> None:
        """Say what cut_short found: interrupted by the end of its runner."""
        self.state, self.reason = RunState.INTERRUPTED, RUNNER_GONE

    def resumable(self) -> bool:
        """A run that a container stop or crash cut short, asked to go on (not --no-resume), whose kernel
        has been started again with its saved variables since."""
        if not self.resume or self.resumed_by:
            return False
        if self.cells_total and self.cells_done >= self.cells_total:
            return False  # every cell ran: only its outputs were left to write (kept outputs, written on)
        if self.state != RunState.INTERRUPTED and not self.cut_short():
            return False
        kernel = kernels.read(self.kernel_id or "")
        since = self.updated or self.started or 0
        return bool(kernel and (kernel.restored_at or 0) > since and kernel.alive())


# --- the files --------------------------------------------------------------------------------------

def record_path(run_id: str) -> Path:
    return paths.RUNS_DIR / f"{run_id}.json"


def load(path: Path) -> RunRecord | None:
    """The record in this file; None if it is gone, damaged, or not the record its name says (a pending file)."""
    try:
        record = RunRecord.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return record if path.name == f"{record.id}.json" else None


def save(record: RunRecord) -> None:
    """The owner's write: whole or not at all, readable by the notebook user only."""
    paths.private_dir(paths.RUNS_DIR)
    paths.write_private(record_path(record.id), record.to_json())


# --- reading --------------------------------------------------------------------------------------

def all_runs() -> list[RunRecord]:
    """Every run record, newest first; an active one whose runner is gone is shown as interrupted."""
    runs = []
    if not paths.RUNS_DIR.is_dir():
        return runs
    for path in paths.RUNS_DIR.glob("*.json"):
        record = load(path)
        if record is None:
            continue
        if record.cut_short():
            record.mark_cut_short()
        runs.append(record)
    runs.sort(key=lambda r: r.started or 0, reverse=True)
    return runs


PENDING_SUFFIX = ".pending.json"


def pending_outputs() -> list[Path]:
    """Outputs a run could not write into its notebook (a full disk), kept in the state volume until they are
    (Run.keep_pending writes them, the runner that finds them after the run's own runner died writes them on)."""
    return sorted(paths.RUNS_DIR.glob("*" + PENDING_SUFFIX)) if paths.RUNS_DIR.is_dir() else []


def read_run(run_id: str) -> RunRecord | None:
    for record in all_runs():
        if record.id == run_id:
            return record
    return None


def active_by_kernel() -> dict[str | None, RunRecord]:
    """kernel id -> its active run, for `notebookctl kernels`."""
    return {r.kernel_id: r for r in all_runs() if r.state in ACTIVE}
