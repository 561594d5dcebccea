"""One server-side run: the notebook's cells sent one at a time, their outputs merged by cell id into the file as it is
on disk (nbfile), after every cell and every few seconds during a long one; and where it starts (resolve_notebook,
cell_after)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import kernelstate, paths, settings
from ..state import kernels as records
from ..state import runs
from ..state.kernels import KernelRecord
from ..state.runs import ACTIVE, PENDING_SUFFIX, RunRecord, RunState
from . import nbfile
from .kernel import KernelChannels, RunError

if TYPE_CHECKING:
    from .service import Runner

log = logging.getLogger("notebook-runner")
TICK = 0.25  # how often a waiting cell checks the kernel, a stop request and the write schedule
MIN_WRITE_INTERVAL = 1.0  # seconds between writes of a notebook while a cell prints
WRITE_BANDWIDTH = 2 * 2**20  # a big notebook is rewritten at most at this many bytes per second
RECORD_INTERVAL = 1.0
ABORTED_RESENDS = 3  # times a run's cell the kernel dropped after another client's error is sent again
SAVE_RETRY = 2.0  # seconds between tries to save a finished run's outputs that could not be written


class Run:
    """One server-side run of a notebook's cells in a kernel, its outputs merged into the file, its record kept."""

    def __init__(self, runner: Runner, path: Path, rel: str, nb: dict, cells: list[dict], kernel_id: str,
                 kernel_name: str, keep_going: bool, selection: str, resume: bool = True,
                 resumed_from: RunRecord | None = None) -> None:
        self.runner = runner
        self.path = path
        self.target = path  # where outputs go: the notebook, or a side file once it is gone
        # What is kept of the file between writes is its skeleton (no outputs: a notebook of images is not held
        # whole while the run goes on): the last content read or written, the merge base for a side file; and
        # the notebook the run started from, a side copy's base, ids unchanged.
        self.base = nbfile.skeleton(nb)
        self.planned = json.dumps(self.base)
        self.side_copy: Path | None = None  # where all outputs also go once cells of the run left the file
        self.cells = cells
        self.given = {c["id"]: c["source"] for c in cells if c.get("given")}  # code JupyterLab sent, kept with outputs
        self.keep_going = keep_going
        self.results: dict[str, nbfile.CellOutputs] = {}
        self.displays: dict[str, list[dict]] = {}
        self.stop_reason: str | None = None  # "stop" (--stop) or "container stop"
        self.dirty = False
        self.last_write = 0.0
        self.write_interval = MIN_WRITE_INTERVAL
        self.last_record = 0.0
        self.write_error: str | None = None
        self.aborted = 0  # cells of this run the kernel dropped (another client's error) and that were sent again
        self.cells_seen: tuple | None = None  # (the file's inode, size and time; cell id -> (number, its code or None))
        self.id = secrets.token_hex(4)
        self.pending = paths.RUNS_DIR / f"{self.id}{PENDING_SUFFIX}"  # outputs the notebook could not take yet
        self.kernel_record: KernelRecord | None = None
        self.record = RunRecord(
            id=self.id, notebook=rel, state=RunState.STARTING, path=str(path), kernel_id=kernel_id,
            kernel_name=kernel_name, selection=selection, keep_going=keep_going, cells_total=len(cells),
            cell=cells[0]["number"] if cells else None, last_cell=cells[-1]["number"] if cells else None,
            started=time.time(), updated=time.time(), runner_pid=os.getpid(),
            runner_start=paths.process_start_time(os.getpid()), resume=resume,
            resumed_from=resumed_from.id if resumed_from else None)
        self.resumed_from = resumed_from
        self.save_record()

    # --- bookkeeping ----------------------------------------------------------------------------

    def save_record(self, force: bool = True) -> None:
        now = time.time()
        if not force and now - self.last_record < RECORD_INTERVAL:
            return
        self.last_record = now
        self.record.updated = now
        self.record.write_error = self.write_error
        try:
            runs.save(self.record)
        except OSError as exc:
            log.warning("run %s: cannot write its record: %s", self.id, exc)

    def set_state(self, state: RunState, **fields) -> None:
        changed = self.record.state != state or any(getattr(self.record, k) != v for k, v in fields.items())
        self.record.state = state
        for name, value in fields.items():
            setattr(self.record, name, value)
        if changed and not (state not in ACTIVE and self.write_error):  # (an end with outputs unsaved: saving)
            # waiting <-> running, twice a cell: at most every RECORD_INTERVAL; an end at once
            self.save_record(force=state not in ACTIVE)

    def note(self, text: str) -> None:
        log.info("run %s (%s): %s", self.id, self.record.notebook, text)
        self.record.notes.append(text)
        self.save_record()

    def metadata(self) -> dict:
        r = self.record
        stamp = lambda t: None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
        return {"id": r.id, "state": r.state, "status": r.describe(), "started": stamp(r.started),
                "ended": stamp(r.ended), "cell": r.cell, "cells_done": r.cells_done,
                "cells_total": r.cells_total, "kernel_id": r.kernel_id, "kernel_name": r.kernel_name}

    # --- the file -----------------------------------------------------------------------------------

    def _read_current(self) -> dict | None:
        """The notebook as it is on disk now; None if it is gone or no longer readable as a notebook."""
        for attempt in range(5):
            try:
                return nbfile.parse(self.path.read_text(), self.record.notebook)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None
            except (OSError, UnicodeDecodeError, nbfile.NotebookError):
                if attempt == 4:
                    return None
                time.sleep(0.05 * (attempt + 1))  # a save by another program may be under way
        return None

    def _write_sync(self, results: dict[str, dict], metadata: dict) -> int:
        """Merge the results into the file as it is now and write it; the bytes written."""
        import nbformat

        for _ in range(3):
            if self.target == self.path:
                try:
                    before = self.path.stat()
                except OSError:
                    before = None
                current = self._read_current() if before else None
                if current is None:
                    self.target = nbfile.side_file(self.path, self.id, paths.RUNS_DIR)
                    continue  # flush() records where, in the event loop's thread
            else:
                current, before = json.loads(json.dumps(self.base)), None
            merged, missing = nbfile.merge(current, results, metadata)
            if missing and self.target == self.path:
                self._save_side_copy(results, metadata)
            nbfile.validate(merged)
            text = nbformat.writes(nbformat.from_dict(merged), version=nbformat.NO_CONVERT)
            def unchanged(before=before) -> bool:
                if before is None:
                    return True
                try:
                    after = self.path.stat()
                except OSError:
                    return False
                return (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size,
                                                                            before.st_mtime_ns)
            try:
                nbfile.atomic_write(self.target, text, unchanged)
            except nbfile.Changed:
                continue  # saved by someone else meanwhile: merge into that instead
            self.base = nbfile.skeleton(merged)
            return len(text)
        raise OSError("the notebook kept changing while the run tried to save it")

    def _save_side_copy(self, results: dict[str, dict], metadata: dict) -> None:
        """Cells this run executed are no longer in the notebook (another version saved over it, cell ids
        changed or stripped, a symlink swapped in, cells deleted): their outputs are not dropped but saved,
        all of them, into a side file made from the notebook the run started from (named by `runs`)."""
        import nbformat

        side = self.side_copy or nbfile.side_file(self.path, self.id, paths.RUNS_DIR)
        merged, _ = nbfile.merge(json.loads(self.planned), results, metadata)
        text = nbformat.writes(nbformat.from_dict(merged), version=nbformat.NO_CONVERT)
        nbfile.atomic_write(side, text)
        self.side_copy = side

    async def flush(self, force: bool = False) -> None:
        if not self.dirty and not force:
            return
        if not force and time.monotonic() - self.last_write < self.write_interval:
            return
        results = self.results_now()
        started = time.monotonic()
        changed, self.dirty = self.dirty, False
        target, size = self.target, 0
        try:
            size = await asyncio.to_thread(self._write_sync, results, self.metadata())
            self.write_error = None
            if self.pending.exists():
                self.pending.unlink(missing_ok=True)
        except Exception as exc:  # noqa: BLE001 - disk full, invalid content: keep the outputs, try again
            self.dirty = True
            message = f"could not save {self.target}: {exc}"
            if changed or not self.pending.exists():
                try:
                    await asyncio.to_thread(self.keep_pending, results)
                except OSError as kept:
                    message += f" (kept in the runner's memory only: the state volume refused them too: {kept})"
            if message != self.write_error:
                log.warning("run %s: %s", self.id, message)
            self.write_error = message
        if self.target != target:
            self.record.saved_to = str(self.target)
            self.note(f"{self.record.notebook} was deleted, renamed or damaged during the run: saving to "
                      f"{self.target}")
        if self.side_copy is not None and self.record.saved_to != str(self.side_copy):
            self.record.saved_to = str(self.side_copy)
            self.note(f"cells this run executed are no longer in {self.record.notebook} (another version saved "
                      f"over it, or its cells deleted): all of the run's outputs are also in {self.side_copy}")
        cost = time.monotonic() - started
        self.last_write = time.monotonic()
        self.write_interval = max(MIN_WRITE_INTERVAL, 10 * cost, size / WRITE_BANDWIDTH)

    def results_now(self) -> dict[str, dict]:
        """What goes into the file: cell id -> its outputs and count (and the code, if the page sent it)."""
        return {cid: {**out.result(), **({"source": self.given[cid]} if cid in self.given else {})}
                for cid, out in self.results.items()}

    def keep_pending(self, results: dict[str, dict]) -> None:
        """The outputs the notebook could not take, in the state volume (as the notebook would hold them: each
        stream cut as in the file), so that none is lost if this runner ends before they can be written:
        the next runner writes them (Runner.write_pending)."""
        kept = nbfile.PendingOutputs(run_id=self.id, notebook=self.record.notebook, path=str(self.target),
                                     results=results, metadata=self.metadata())
        paths.write_private(self.pending, kept.to_json())

    async def current_cell(self, cell: dict) -> tuple[str | None, int]:
        """The cell's code and number (1-based, as the editor counts) in the file as saved now; None as
        code if it was deleted or is no longer a code cell. From the plan if the file is gone. The file is
        read again only when it changed (its inode, size or time): per cell, no cost that grows with it."""
        if self.target != self.path or cell.get("given"):  # (given: the code JupyterLab sent, resumed)
            return cell["source"], cell["number"]
        try:
            stat = self.path.stat()
            key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except OSError:
            key = None
        if key is None or self.cells_seen is None or self.cells_seen[0] != key:
            nb = await asyncio.to_thread(self._read_current)
            if nb is None:
                return cell["source"], cell["number"]  # the next write says where the outputs go instead
            self.cells_seen = (key, {c.get("id"): (number, nbfile.source(c) if c.get("cell_type") == "code" else None)
                                     for number, c in enumerate(nb["cells"], 1)})
        if cell["id"] not in self.cells_seen[1]:
            if not any(planned["id"] in self.cells_seen[1] for planned in self.cells):
                # None of the run's cells is there: another version replaced the notebook (ids changed, a
                # symlink swapped in). The run goes on as planned; its outputs go to a side file too.
                return cell["source"], cell["number"]
            return None, cell["number"]
        number, code = self.cells_seen[1][cell["id"]]
        return code, number

    # --- executing ------------------------------------------------------------------------------

    def kernel_alive(self) -> bool:
        return self.kernel_record is not None and self.kernel_record.alive()

    async def main(self) -> None:
        channels = None
        try:
            kid = self.record.kernel_id
            deadline = time.monotonic() + 30
            while (record := records.read(kid)) is None or not record.alive():
                if time.monotonic() > deadline:
                    raise RunError(f"kernel {kid} has no live record in the state volume")
                await asyncio.sleep(0.1)
            self.kernel_record = record
            channels = KernelChannels(record, self.runner.context)
            await channels.ready(self.kernel_alive)
            if self.resumed_from:
                restored = kernelstate.read_json(paths.KERNEL_STATE_DIR / kid / kernelstate.RESTORED) or {}
                if restored.get("failure"):
                    raise RunError(f"run {self.resumed_from.id} was not resumed: its kernel could not be restored "
                                   f"({restored['failure']})")
            await self.execute_all(channels)
        except RunError as exc:
            self.set_state(RunState.FAILED, error=str(exc), ended=time.time())
            self.note(str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug must end this run, recorded, not the runner
            log.exception("run %s failed", self.id)
            self.set_state(RunState.FAILED, error=f"{type(exc).__name__}: {exc}", ended=time.time())
        finally:
            if channels is not None:
                channels.close()
            await self.flush(force=True)
            await self.save_until_saved()
            self.save_record()
            self.runner.finished(self)

    async def save_until_saved(self) -> None:
        """The run has ended but its outputs could not be written (a full disk, a folder made read-only): it
        keeps them (in memory, bounded) and says so (`saving`, with why), trying again every SAVE_RETRY
        seconds until they are written or the container stops; it never says done with output missing."""
        if not self.write_error:
            return
        r = self.record
        final = r.state, r.error, r.ended
        while self.write_error and not self.runner.stopping.is_set():
            self.set_state(RunState.SAVING, ended=None)
            self.save_record()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.runner.stopping.wait(), SAVE_RETRY)
            await self.flush(force=True)
        r.state, r.error, r.ended = final
        r.ended = r.ended or time.time()
        if not self.write_error:
            self.note("its outputs were written once the notebook could be saved again")
            await self.flush(force=True)  # the notebook's metadata says how it ended, not `saving`
        if self.write_error:  # the container stops: the outputs are in the state volume, for the next runner
            kept = "kept in the state volume: the next runner writes them" if self.pending.exists() else "lost"
            r.state, r.error = RunState.FAILED, f"outputs not saved: {self.write_error}; {kept}"

    async def execute_all(self, channels: KernelChannels) -> None:
        for index, cell in enumerate(self.cells):
            if self.stop_reason:
                break
            code, number = await self.current_cell(cell)
            self.record.cell, self.record.cell_index = number, index + 1
            if code is None:
                self.note(f"cell {number} was deleted (or is no longer a code cell) since the run started: skipped")
                self.record.cells_done = index + 1
                continue
            if code != cell["source"]:
                self.note(f"cell {number} was edited after the run started: ran the version saved when the run "
                          "reached it")
            outputs = self.results[cell["id"]] = nbfile.CellOutputs(self.displays)
            if self.resumed_from and index == 0:
                outputs.note(f"persistent-notebooks: run {self.resumed_from.id} was interrupted by a container "
                             f"restart while this cell ran; it goes on as run {self.id}, in the restored kernel, "
                             "and this cell runs again from its start.")
            self.dirty = True
            outcome = await self.execute(channels, outputs, code)
            self.record.cells_done = index + 1
            await self.flush()  # batched by time (write_interval): a cell's end is in the file within seconds
            if outcome == "ok" or (outcome == "error" and self.keep_going and not self.stop_reason):
                continue
            break
        await self.flush(force=True)  # before the end is said: with outputs unsaved, it is `saving` first
        ended = time.time()
        if self.record.state == RunState.FAILED:
            self.record.ended = ended
            self.save_record()
        elif self.stop_reason == "container stop":
            self.set_state(RunState.INTERRUPTED, reason="a container stop", ended=ended)
        elif self.stop_reason:
            self.set_state(RunState.STOPPED, ended=ended)
        else:
            self.set_state(RunState.DONE, ended=ended)

    async def execute(self, channels: KernelChannels, outputs: nbfile.CellOutputs, code: str) -> str:
        """Run one cell; 'ok', 'error' (an exception in the cell), or 'ended' (the run ends here)."""
        msg_id = channels.send("shell", "execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": not self.keep_going})
        self.set_state(RunState.WAITING)
        reply: dict | None = None
        idle = interrupted = False
        while reply is None or not idle:
            try:
                channel, msg = await asyncio.wait_for(channels.queue.get(), TICK)
            except TimeoutError:
                msg = None
            if msg is not None and msg["parent_header"].get("msg_id") == msg_id:
                msg_type = msg["header"]["msg_type"]
                if channel == "iopub":
                    if msg_type == "status":
                        state = msg["content"].get("execution_state")
                        if state == "busy":
                            self.set_state(RunState.RUNNING)
                        elif state == "idle":
                            idle = True
                    elif outputs.add(msg_type, msg["content"]):
                        self.dirty = True
                elif channel == "shell" and msg_type == "execute_reply":
                    reply = msg["content"]
                    if reply.get("execution_count") is not None and outputs.execution_count is None:
                        outputs.execution_count = reply["execution_count"]
                continue  # drain what is queued before the checks below
            if self.stop_reason == "container stop":
                outputs.note(f"persistent-notebooks: the container stopped while this cell ran; the run "
                             f"{self.id} ended here (cell {self.record.cell}).")
                self.dirty = True
                return "ended"
            if self.stop_reason == "stop" and self.record.state == RunState.RUNNING and not interrupted:
                self.interrupt()
                interrupted = True
            if not self.kernel_alive():
                oom = " (out of memory: the OOM killer ends kernels first)" if self.runner.oom_kills_changed() else ""
                outputs.fail("DeadKernelError", f"The kernel died while this cell ran{oom}; the run "
                             f"{self.id} ended at cell {self.record.cell}.")
                self.dirty = True
                self.set_state(RunState.FAILED, error=f"the kernel died{oom}")
                return "ended"
            await self.flush()
            self.save_record(force=False)
        channels.expected.discard(msg_id)
        status = reply.get("status")
        if status == "ok":
            return "ok"
        if status == "aborted" and not self.stop_reason and self.aborted < ABORTED_RESENDS:
            # Never run: a cell run by hand before it failed, and ipykernel drops the requests queued behind
            # an error (stop_on_error, as VSCode and JupyterLab send their cells). Sent again, and said so.
            self.aborted += 1
            self.note(f"cell {self.record.cell} was not run: the kernel dropped it after another client's cell "
                      "failed before it; sent again")
            return await self.execute(channels, outputs, code)
        if self.stop_reason == "stop":
            return "ended"
        ename = reply.get("ename") or status or "error"
        self.record.errors.append({"cell": self.record.cell, "error": ename})
        if not self.keep_going:
            self.set_state(RunState.FAILED, error=ename)
        return "error"

    def interrupt(self) -> None:
        record = self.kernel_record
        try:
            if record is None:
                raise ProcessLookupError("no kernel yet")
            os.killpg(record.pgid or record.pid, signal.SIGINT)
        except (ProcessLookupError, PermissionError) as exc:
            log.warning("run %s: could not interrupt the kernel: %s", self.id, exc)

    def request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason


def resolve_notebook(text: str) -> tuple[Path, str]:
    """An existing notebook under the workspace: (absolute path, path relative to the workspace)."""
    root = settings.WORKSPACE.resolve()
    given = Path(text)
    path = given if given.is_absolute() else root / given
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        raise RunError(f"{text}: no such file under {root} (paths are relative to {root}, or absolute "
                       "under it)") from None
    except OSError as exc:
        raise RunError(f"{text}: {exc.strerror}") from None
    if not real.is_relative_to(root):
        raise RunError(f"{text} is outside the workspace {root}: runs are for notebooks under it.")
    if not real.is_file():
        raise RunError(f"{text} is not a file.")
    if real.suffix != ".ipynb":
        raise RunError(f"{text} is not a notebook (.ipynb).")
    return real, str(real.relative_to(root))


def cell_after(nb: dict, after: dict, rel: str) -> int:
    """The number (from 1) of the cell after the one that asked (%run_on_server's): found by its id (JupyterLab's
    cellId is the cell's id), else by its source as saved (VSCode's cellId is a URI); exactly one."""
    cells = nb["cells"]
    wanted = after.get("cell") or ""
    found = [i for i, c in enumerate(cells) if wanted and c.get("id") == wanted]
    if not found:
        code = (after.get("code") or "").strip()
        found = [i for i, c in enumerate(cells) if c.get("cell_type") == "code" and code
                 and nbfile.source(c).strip() == code]
    if not found:
        raise RunError(f"the cell running this is not in {rel} as saved on disk: the run uses the file, so save "
                       "the notebook first (or say where to start: --from N).")
    if len(found) > 1:
        raise RunError(f"the cell running this is in {rel} {len(found)} times (cells "
                       f"{', '.join(str(i + 1) for i in found)}): say where to start, --from N.")
    if found[0] + 1 >= len(cells):
        raise RunError(f"this is the last cell of {rel} (as saved): nothing after it to run.")
    return found[0] + 2
