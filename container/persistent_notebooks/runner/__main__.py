"""The notebook runner: runs a notebook's cells server-side, in its kernel, outputs into the file.

A program of supervisord's (`notebook-runner`), started on demand by `notebookctl run` and ending by
itself once it has had nothing to do for IDLE_EXIT seconds, so an idle stack pays nothing for it.
It talks to kernels directly over their ZeroMQ channels (the connection file in the kernel's record),
never through the Jupyter server: a run goes on through editor disconnects and through a crash, a
kill -9 or a hang of Jupyter. It sends one cell at a time, as an editor does, collects that cell's
IOPub messages into outputs as Jupyter's frontends do, and merges them by cell id into the notebook
file as it is on disk (nbfile), after every cell and every few seconds during a long one.

It owns the run records (runs/ID.json in the state volume): it creates, updates and prunes them
(finished runs are kept KEEP_FINISHED seconds); `notebookctl runs` only reads them.

Protocol, on the private unix socket run/runner.sock: one JSON line per request, one per reply
({"ok": true, ...} or {"ok": false, "error": "..."}).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("NBFORMAT_VALIDATOR", "fastjsonschema")

import zmq  # noqa: E402
import zmq.asyncio  # noqa: E402
from jupyter_client.session import Session  # noqa: E402

from .. import jupyterapi, kernelstate, paths, settings  # noqa: E402
from ..state.runs import ACTIVE, PENDING_SUFFIX, all_runs, describe, pending_outputs, resumable, runner_alive  # noqa: E402
from . import nbfile  # noqa: E402

log = logging.getLogger("notebook-runner")
KEEP_FINISHED = 7 * 86400
IDLE_EXIT = 60.0  # seconds with no run and no request, then the runner exits (started again on demand)
KERNEL_READY_TIMEOUT = 60.0
TICK = 0.25  # how often a waiting cell checks the kernel, a stop request and the write schedule
MIN_WRITE_INTERVAL = 1.0  # seconds between writes of a notebook while a cell prints
WRITE_BANDWIDTH = 2 * 2**20  # a big notebook is rewritten at most at this many bytes per second
RECORD_INTERVAL = 1.0
ABORTED_RESENDS = 3  # times a run's cell the kernel dropped after another client's error is sent again
SAVE_RETRY = 2.0  # seconds between tries to save a finished run's outputs that could not be written
PAGE_CHECK = 2.0  # seconds between checks that the page which sent followed cells is still connected
FOLLOW_LINGER = 30.0  # seconds a follow goes on after its last cell ended, for the next cells of the page
HANDOVER_GRACE = 150.0  # seconds a connected page has to save the outputs itself (JupyterLab autosaves every 120)
FOLLOW_READY_TIMEOUT = 10.0


class RunError(Exception):
    """A run that cannot start as asked; the message says why and what to do."""


def api(method: str, path: str, body: dict | None = None) -> object:
    try:
        return jupyterapi.api(method, path, body)
    except jupyterapi.ApiError as exc:
        raise RunError(str(exc)) from None


# --- the kernel's channels --------------------------------------------------------------------

class KernelChannels:
    """Shell, control and IOPub sockets to one kernel, with the messages of our requests queued."""

    def __init__(self, record: dict, context: zmq.asyncio.Context) -> None:
        info = json.loads(Path(record["connection_file"]).read_text())
        self.session = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"],
                               username="persistent-notebooks-run")

        def socket(kind: int, port_name: str) -> zmq.asyncio.Socket:
            sock = context.socket(kind)
            sock.linger = 0
            if kind == zmq.SUB:
                sock.setsockopt(zmq.RCVHWM, 0)  # never drop output on our side, whatever the rate
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(f"{info['transport']}://{info['ip']}:{info[port_name]}")
            return sock

        self.iopub = socket(zmq.SUB, "iopub_port")
        self.shell = socket(zmq.DEALER, "shell_port")
        self.control = socket(zmq.DEALER, "control_port")
        self.queue: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
        self.expected: set[str] = set()
        self.tasks = [asyncio.ensure_future(self._read(name, sock))
                      for name, sock in (("iopub", self.iopub), ("shell", self.shell), ("control", self.control))]

    async def _read(self, channel: str, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart()
            try:
                _, parts = self.session.feed_identities(frames, copy=True)
                msg = self.session.deserialize(parts, content=True)
            except Exception:  # noqa: BLE001 - a malformed message is skipped, never the end of the run
                log.warning("skipped a malformed message on %s", channel)
                continue
            if msg["parent_header"].get("msg_id") in self.expected:
                self.queue.put_nowait((channel, msg))

    def send(self, channel: str, msg_type: str, content: dict) -> str:
        msg = self.session.msg(msg_type, content)
        self.expected.add(msg["header"]["msg_id"])
        self.session.send(self.shell if channel == "shell" else self.control, msg)
        return msg["header"]["msg_id"]

    async def ready(self, alive, timeout: float = KERNEL_READY_TIMEOUT) -> None:
        """Wait until the kernel answers and our IOPub subscription is live (a status message of ours
        arrived on it), so that no output of the first cell is missed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg_id = self.send("control", "kernel_info_request", {})
            wait_until = time.monotonic() + 1.0
            while time.monotonic() < wait_until:
                try:
                    channel, msg = await asyncio.wait_for(self.queue.get(), 0.2)
                except TimeoutError:
                    if not alive():
                        raise RunError("the kernel ended before the run could start") from None
                    continue
                if channel == "iopub" and msg["parent_header"].get("msg_id") == msg_id:
                    self.drain()
                    return
        raise RunError(f"the kernel did not answer within {timeout:.0f} s")

    def drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.expected.clear()

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for sock in (self.iopub, self.shell, self.control):
            sock.close()


# --- one run ------------------------------------------------------------------------------------

class Run:
    def __init__(self, runner: Runner, path: Path, rel: str, nb: dict, cells: list[dict], kernel_id: str,
                 kernel_name: str, keep_going: bool, selection: str, resume: bool = True,
                 resumed_from: dict | None = None) -> None:
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
        self.kernel_record: dict | None = None
        self.record = {
            "id": self.id, "notebook": rel, "path": str(path), "kernel_id": kernel_id, "kernel_name": kernel_name,
            "selection": selection, "keep_going": keep_going, "cells_total": len(cells), "cells_done": 0,
            "cell": cells[0]["number"] if cells else None, "state": "starting", "reason": None, "error": None,
            "started": time.time(), "ended": None, "updated": time.time(), "runner_pid": os.getpid(),
            "runner_start": paths.process_start_time(os.getpid()), "resume": resume,
            "resumed_from": resumed_from["id"] if resumed_from else None,
            "last_cell": cells[-1]["number"] if cells else None,
            "saved_to": None, "notes": [], "errors": [], "write_error": None,
        }
        self.resumed_from = resumed_from
        self.save_record()

    # --- bookkeeping ----------------------------------------------------------------------------

    def save_record(self, force: bool = True) -> None:
        now = time.time()
        if not force and now - self.last_record < RECORD_INTERVAL:
            return
        self.last_record = now
        self.record["updated"] = now
        self.record["write_error"] = self.write_error
        try:
            paths.private_dir(paths.RUNS_DIR)
            paths.write_private(paths.RUNS_DIR / f"{self.id}.json", json.dumps(self.record, indent=1))
        except OSError as exc:
            log.warning("run %s: cannot write its record: %s", self.id, exc)

    def set_state(self, state: str, **fields) -> None:
        changed = self.record["state"] != state or any(self.record.get(k) != v for k, v in fields.items())
        self.record.update(state=state, **fields)
        if changed and not (state not in ACTIVE and self.write_error):  # (an end with outputs unsaved: saving)
            # waiting <-> running, twice a cell: at most every RECORD_INTERVAL; an end at once
            self.save_record(force=state not in ACTIVE)

    def note(self, text: str) -> None:
        log.info("run %s (%s): %s", self.id, self.record["notebook"], text)
        self.record["notes"].append(text)
        self.save_record()

    def metadata(self) -> dict:
        r = self.record
        stamp = lambda t: None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
        return {"id": r["id"], "state": r["state"], "status": describe(r), "started": stamp(r["started"]),
                "ended": stamp(r["ended"]), "cell": r["cell"], "cells_done": r["cells_done"],
                "cells_total": r["cells_total"], "kernel_id": r["kernel_id"], "kernel_name": r["kernel_name"]}

    # --- the file -----------------------------------------------------------------------------------

    def _read_current(self) -> dict | None:
        """The notebook as it is on disk now; None if it is gone or no longer readable as a notebook."""
        for attempt in range(5):
            try:
                return nbfile.parse(self.path.read_text(), self.record["notebook"])
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
            self.record["saved_to"] = str(self.target)
            self.note(f"{self.record['notebook']} was deleted, renamed or damaged during the run: saving to "
                      f"{self.target}")
        if self.side_copy is not None and self.record.get("saved_to") != str(self.side_copy):
            self.record["saved_to"] = str(self.side_copy)
            self.note(f"cells this run executed are no longer in {self.record['notebook']} (another version saved "
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
        kept = nbfile.PendingOutputs(run_id=self.id, notebook=self.record["notebook"], path=str(self.target),
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
        return self.kernel_record is not None and paths.kernel_alive(self.kernel_record)

    async def main(self) -> None:
        channels = None
        try:
            kid = self.record["kernel_id"]
            deadline = time.monotonic() + 30
            while (record := paths.read_record(kid)) is None or not paths.kernel_alive(record):
                if time.monotonic() > deadline:
                    raise RunError(f"kernel {kid} has no live record in the state volume")
                await asyncio.sleep(0.1)
            self.kernel_record = record
            channels = KernelChannels(record, self.runner.context)
            await channels.ready(self.kernel_alive)
            if self.resumed_from:
                restored = kernelstate.read_json(paths.KERNEL_STATE_DIR / kid / kernelstate.RESTORED) or {}
                if restored.get("failure"):
                    raise RunError(f"run {self.resumed_from['id']} was not resumed: its kernel could not be restored "
                                   f"({restored['failure']})")
            await self.execute_all(channels)
        except RunError as exc:
            self.set_state("failed", error=str(exc), ended=time.time())
            self.note(str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug must end this run, recorded, not the runner
            log.exception("run %s failed", self.id)
            self.set_state("failed", error=f"{type(exc).__name__}: {exc}", ended=time.time())
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
        final = {k: self.record[k] for k in ("state", "error", "ended")}
        while self.write_error and not self.runner.stopping.is_set():
            self.set_state("saving", ended=None)
            self.save_record()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.runner.stopping.wait(), SAVE_RETRY)
            await self.flush(force=True)
        self.record.update(final)
        self.record["ended"] = self.record["ended"] or time.time()
        if not self.write_error:
            self.note("its outputs were written once the notebook could be saved again")
            await self.flush(force=True)  # the notebook's metadata says how it ended, not `saving`
        if self.write_error:  # the container stops: the outputs are in the state volume, for the next runner
            kept = "kept in the state volume: the next runner writes them" if self.pending.exists() else "lost"
            self.record.update(state="failed", error=f"outputs not saved: {self.write_error}; {kept}")

    async def execute_all(self, channels: KernelChannels) -> None:
        for index, cell in enumerate(self.cells):
            if self.stop_reason:
                break
            code, number = await self.current_cell(cell)
            self.record.update(cell=number, cell_index=index + 1)
            if code is None:
                self.note(f"cell {number} was deleted (or is no longer a code cell) since the run started: skipped")
                self.record["cells_done"] = index + 1
                continue
            if code != cell["source"]:
                self.note(f"cell {number} was edited after the run started: ran the version saved when the run "
                          "reached it")
            outputs = self.results[cell["id"]] = nbfile.CellOutputs(self.displays)
            if self.resumed_from and index == 0:
                outputs.note(f"persistent-notebooks: run {self.resumed_from['id']} was interrupted by a container "
                             f"restart while this cell ran; it goes on as run {self.id}, in the restored kernel, "
                             "and this cell runs again from its start.")
            self.dirty = True
            outcome = await self.execute(channels, outputs, code)
            self.record["cells_done"] = index + 1
            await self.flush()  # batched by time (write_interval): a cell's end is in the file within seconds
            if outcome == "ok" or (outcome == "error" and self.keep_going and not self.stop_reason):
                continue
            break
        await self.flush(force=True)  # before the end is said: with outputs unsaved, it is `saving` first
        ended = time.time()
        if self.record["state"] == "failed":
            self.record["ended"] = ended
            self.save_record()
        elif self.stop_reason == "container stop":
            self.set_state("interrupted", reason="a container stop", ended=ended)
        elif self.stop_reason:
            self.set_state("stopped", ended=ended)
        else:
            self.set_state("done", ended=ended)

    async def execute(self, channels: KernelChannels, outputs: nbfile.CellOutputs, code: str) -> str:
        """Run one cell; 'ok', 'error' (an exception in the cell), or 'ended' (the run ends here)."""
        msg_id = channels.send("shell", "execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": not self.keep_going})
        self.set_state("waiting")
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
                            self.set_state("running")
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
                             f"{self.id} ended here (cell {self.record['cell']}).")
                self.dirty = True
                return "ended"
            if self.stop_reason == "stop" and self.record["state"] == "running" and not interrupted:
                self.interrupt()
                interrupted = True
            if not self.kernel_alive():
                oom = " (out of memory: the OOM killer ends kernels first)" if self.runner.oom_kills_changed() else ""
                outputs.fail("DeadKernelError", f"The kernel died while this cell ran{oom}; the run "
                             f"{self.id} ended at cell {self.record['cell']}.")
                self.dirty = True
                self.set_state("failed", error=f"the kernel died{oom}")
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
            self.note(f"cell {self.record['cell']} was not run: the kernel dropped it after another client's cell "
                      "failed before it; sent again")
            return await self.execute(channels, outputs, code)
        if self.stop_reason == "stop":
            return "ended"
        ename = reply.get("ename") or status or "error"
        self.record["errors"].append({"cell": self.record["cell"], "error": ename})
        if not self.keep_going:
            self.set_state("failed", error=ename)
        return "error"

    def interrupt(self) -> None:
        record = self.kernel_record or {}
        try:
            os.killpg(record.get("pgid") or record["pid"], signal.SIGINT)
        except (ProcessLookupError, PermissionError, KeyError) as exc:
            log.warning("run %s: could not interrupt the kernel: %s", self.id, exc)

    def request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason


@dataclass
class FollowedCell:
    """One execute request JupyterLab sent the kernel (server.follow.SentCell), and whether it has run."""

    msg_id: str
    cell_id: str
    source: str
    done: bool = False


class FollowRun(Run):
    """The cells a JupyterLab page sent one kernel of one notebook, followed on the kernel's IOPub.

    The kernel holds their queue (JupyterLab sends every cell of Run All at once), so they run with the page
    closed and through a kill -9 of Jupyter; this collects their outputs. While the page that sent them is
    connected it shows and saves them itself, and a write here would only make its next save ask about a file
    changed on disk: the outputs go into the file once that page is gone (closed, Jupyter killed), or if it has
    not saved them HANDOVER_GRACE seconds after its cells ended."""

    def __init__(self, runner: Runner, path: Path, rel: str, nb: dict, kernel_id: str, kernel_name: str) -> None:
        super().__init__(runner, path, rel, nb, [], kernel_id, kernel_name, keep_going=True,
                         selection="cells sent by JupyterLab", resume=False)
        self.sent: dict[str, FollowedCell] = {}  # msg_id -> cell, in the order the kernel runs them
        self.sources: dict[str, str] = {}  # cell id -> the code of its last execution
        self.clients: set[str] = set()  # the pages (kernel client ids) that sent them
        self.page_connected = True
        self.last_activity = time.monotonic()
        self.ended_at: float | None = None  # when the last followed cell ended
        self.channels: KernelChannels | None = None
        self.following = asyncio.Event()

    def metadata(self) -> None:
        return None  # the notebook's metadata says nothing: JupyterLab ran these cells, as ever

    def _save_side_copy(self, results: dict[str, dict], metadata: dict) -> None:
        """A cell not in the file is one the page has not saved yet: the page holds it and its outputs."""

    def results_now(self) -> dict[str, dict]:
        return {cid: {**out.result(), "source": self.sources[cid]} for cid, out in self.results.items()}

    async def add(self, msg_id: str, cell_id: str, source: str, client: str) -> None:
        """Follow one more execute request; returns once its output cannot be missed (before the kernel has it)."""
        await asyncio.wait_for(self.following.wait(), FOLLOW_READY_TIMEOUT)
        if self.stop_reason:
            raise RunError(f"following kernel {self.record['kernel_id'][:8]} ended: {self.record.get('error')}")
        self.channels.expected.add(msg_id)
        self.sent[msg_id] = FollowedCell(msg_id, cell_id, source)
        self.clients.add(client)
        self.ended_at = None
        self.last_activity = time.monotonic()
        self.record["cells_total"] = len(self.sent)
        self.save_record(force=False)

    def writing_due(self) -> bool:
        if self.stop_reason or not self.page_connected:
            return True
        return self.ended_at is not None and time.monotonic() - self.ended_at > HANDOVER_GRACE

    async def flush(self, force: bool = False) -> None:
        if self.writing_due():
            await super().flush(force)

    def page_still_connected(self) -> bool:
        try:
            model = jupyterapi.api("GET", f"/api/kernels/{self.record['kernel_id']}", timeout=5) or {}
        except jupyterapi.ApiError:
            return False  # Jupyter is down (killed, restarting): the page sees nothing now
        return bool(set(model.get("clients") or []) & self.clients)

    def file_holds_outputs(self) -> bool:
        """The page saved the followed cells' outputs itself: each cell's count in the file is the one it ran with."""
        nb = self._read_current()
        if nb is None:
            return False
        counts = {c.get("id"): c.get("execution_count") for c in nb["cells"]}
        return all(counts.get(cid, out.execution_count) == out.execution_count for cid, out in self.results.items())

    def on_iopub(self, msg: dict) -> None:
        cell = self.sent.get(msg["parent_header"].get("msg_id"))
        if cell is None:
            return
        self.last_activity = time.monotonic()
        msg_type = msg["header"]["msg_type"]
        if msg_type == "status":
            state = msg["content"].get("execution_state")
            if state == "busy":
                for earlier in self.sent.values():  # the kernel runs requests in order: those before are over
                    if earlier is cell:
                        break
                    earlier.done = True
                numbers = {c.get("id"): n for n, c in enumerate(self.base["cells"], 1)}
                self.record["cell"] = numbers.get(cell.cell_id) or f"{cell.cell_id[:8]} (not saved)"
                self.set_state("running")
            elif state == "idle":
                cell.done = True
                self.record["cells_done"] = sum(c.done for c in self.sent.values())
                if all(c.done for c in self.sent.values()):
                    self.ended_at = time.monotonic()
            return
        if msg_type == "execute_input" or cell.cell_id not in self.results:  # a new execution replaces the last
            self.results[cell.cell_id] = nbfile.CellOutputs(self.displays)
            self.sources[cell.cell_id] = cell.source
        if self.results[cell.cell_id].add(msg_type, msg["content"]):
            self.dirty = True

    async def main(self) -> None:
        try:
            kid = self.record["kernel_id"]
            record = paths.read_record(kid)
            if record is None or not paths.kernel_alive(record):
                raise RunError(f"kernel {kid} has no live record in the state volume")
            self.kernel_record = record
            self.channels = KernelChannels(record, self.runner.context)
            await self.channels.ready(self.kernel_alive)
            self.following.set()
            await self.follow()
        except RunError as exc:
            self.set_state("failed", error=str(exc), ended=time.time())
        except Exception as exc:  # noqa: BLE001 - a bug must end this follow, recorded, not the runner
            log.exception("follow %s failed", self.id)
            self.set_state("failed", error=f"{type(exc).__name__}: {exc}", ended=time.time())
        finally:
            self.stop_reason = self.stop_reason or "ended"  # no more cells join; what is held is written
            self.following.set()
            if self.channels is not None:
                self.channels.close()
            if self.dirty:
                await self.flush(force=True)
            await self.save_until_saved()
            self.save_record()
            self.runner.finished(self)

    async def follow(self) -> None:
        last_check = 0.0
        while not self.stop_reason:
            try:
                channel, msg = await asyncio.wait_for(self.channels.queue.get(), TICK)
            except TimeoutError:
                channel = msg = None
            if channel == "iopub":
                self.on_iopub(msg)
                continue
            now = time.monotonic()
            if now - last_check >= PAGE_CHECK:
                last_check = now
                if not self.kernel_alive():  # restarted or ended: its queue went with it
                    self.note("the kernel restarted or ended: the cells it had not run yet were dropped")
                    break
                self.page_connected = await asyncio.to_thread(self.page_still_connected)
                if self.dirty and self.page_connected and self.ended_at is not None \
                        and await asyncio.to_thread(self.file_holds_outputs):
                    self.dirty = False  # the page saved them
            await self.flush()
            self.save_record(force=False)
            if self.ended_at is not None and not self.dirty and now - self.last_activity > FOLLOW_LINGER:
                break
        left = [c for c in self.sent.values() if not c.done]
        if self.stop_reason == "container stop" and left:
            # The kernel's queue ends with the container: the cells it had not finished run again, in order, in
            # the restored kernel (Runner.resume_runs), as a run of the code the page sent.
            if left[0].cell_id in self.results:
                self.results[left[0].cell_id].note(
                    f"persistent-notebooks: the container stopped while this cell ran; it runs again from its "
                    f"start in the restored kernel, with the {len(left) - 1} cell(s) JupyterLab had queued after it.")
                self.dirty = True
            self.record.update(resume=True, queued=[{"id": c.cell_id, "source": c.source} for c in left])
            self.set_state("interrupted", reason="a container stop", ended=time.time())
        else:
            self.set_state("done", ended=time.time())


# --- the program -----------------------------------------------------------------------------------

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


class Runner:
    def __init__(self) -> None:
        self.context = zmq.asyncio.Context()
        self.runs: dict[str, Run] = {}
        self.last_request = time.monotonic()
        self.stopping = asyncio.Event()
        self.oom_kills = self._oom_kills()
        self.kernel_note: str | None = None  # said by kernel_for about its choice, noted in the run
        self.pending_errors: dict[str, str] = {}  # run id -> why its kept outputs cannot be written yet
        self.follows: dict[str, FollowRun] = {}  # kernel id -> the cells JupyterLab sent it, followed
        self.follow_lock = asyncio.Lock()

    @staticmethod
    def _oom_kills() -> int:
        try:
            for line in Path("/sys/fs/cgroup/memory.events").read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0

    def oom_kills_changed(self) -> bool:
        now = self._oom_kills()
        changed, self.oom_kills = now > self.oom_kills, now
        return changed

    def finished(self, run: Run) -> None:
        self.runs.pop(run.id, None)
        if self.follows.get(run.record["kernel_id"]) is run:
            del self.follows[run.record["kernel_id"]]
        self.last_request = time.monotonic()

    # --- records --------------------------------------------------------------------------------

    def tidy_records(self) -> None:
        """Runs another runner left active (it was killed) are marked interrupted; old ones go."""
        if not paths.RUNS_DIR.is_dir():
            return
        for path in paths.RUNS_DIR.glob("*.json"):
            try:
                record = json.loads(path.read_text())
                state = record["state"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if state in ACTIVE and not runner_alive(record) and record["id"] not in self.runs:
                record.update(state="interrupted", reason="the end of the runner (it was killed)",
                              ended=record.get("updated") or time.time())
                paths.write_private(path, json.dumps(record, indent=1))
                # The notebook's own record of the run said "running": it says what happened instead.
                nbfile.correct_run_metadata(Path(record.get("saved_to") or record.get("path") or "/nonexistent"),
                                            record["id"], {"state": "interrupted", "status": describe(record)})
            elif state not in ACTIVE and time.time() - (record.get("ended") or 0) > KEEP_FINISHED:
                path.unlink(missing_ok=True)

    def write_pending(self) -> int:
        """Outputs kept in the state volume by a run whose runner ended before its notebook could take them
        (Run.keep_pending): written into the notebook now if it can take them (a side file if its cells are
        gone), the run's record saying so. Returns how many are still waiting."""
        left = 0
        for pending in pending_outputs():
            run_id = pending.name.removesuffix(PENDING_SUFFIX)
            if run_id in self.runs:
                continue
            try:
                kept = nbfile.PendingOutputs.from_json(pending.read_text())
                written = nbfile.write_outputs(kept, paths.RUNS_DIR)
            except FileNotFoundError:
                continue
            except OSError as exc:  # a full disk still: try again later
                left += 1
                if self.pending_errors.get(run_id) != str(exc):
                    log.warning("run %s: its kept outputs cannot be written yet: %s", run_id, exc)
                self.pending_errors[run_id] = str(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - damaged, or not a valid notebook: kept aside, not retried
                aside = pending.with_name(f"{run_id}.pending-unwritable.json")
                pending.replace(aside)
                log.warning("run %s: its kept outputs cannot be written (%s); they stay in %s", run_id, exc, aside)
                self.note_on(run_id, f"its outputs, kept while the notebook could not be saved, cannot be written "
                                     f"({exc}); they stay in {aside}")
                continue
            pending.unlink(missing_ok=True)
            self.pending_errors.pop(run_id, None)
            log.info("run %s: its kept outputs were written into %s", run_id, written)
            self.note_on(run_id, f"its outputs, kept in the state volume while the notebook could not be saved, "
                                 f"were written into {written} by the next runner", saved_to=written)
        return left

    @staticmethod
    def note_on(run_id: str, text: str, saved_to: str | None = None) -> None:
        """A note in the record of a run of another runner (its outputs' fate)."""
        record_path = paths.RUNS_DIR / f"{run_id}.json"
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(record_path.read_text())
            record["notes"] = [*(record.get("notes") or []), text]
            if saved_to is not None:
                record["write_error"] = None
                if saved_to != record.get("path"):
                    record["saved_to"] = saved_to
            paths.write_private(record_path, json.dumps(record, indent=1))

    async def resume_runs(self) -> None:
        """Runs that a container stop or crash cut short go on in their restored kernels, from the cell
        that was running, to the end of what they were to run."""
        for old in all_runs():
            if not resumable(old):
                continue
            request = {"notebook": old["notebook"], "kernel": old["kernel_id"], "keep_going": old.get("keep_going"),
                       "cells": f"{old['cell']}-{old.get('last_cell') or ''}", "resumed_from": old}
            if old.get("queued"):  # JupyterLab's cells (FollowRun): the code its page sent, not a range of the file
                request.update(cells=None, queued=old["queued"], keep_going=False)
            try:
                run = await self.start(request)
                old.update(resumed_by=run.id)
                log.info("run %s resumes run %s (%s) from cell %s", run.id, old["id"], old["notebook"], old["cell"])
            except RunError as exc:
                old.update(resumed_by="-", resume_error=str(exc))
                log.warning("run %s of %s could not be resumed: %s", old["id"], old["notebook"], exc)
            paths.write_private(paths.RUNS_DIR / f"{old['id']}.json", json.dumps(
                {**old, "state": "interrupted"}, indent=1))

    # --- requests -------------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.last_request = time.monotonic()
        try:
            request = json.loads(await reader.readline())
            reply = await self.dispatch(request)
        except RunError as exc:
            reply = {"ok": False, "error": str(exc)}
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        except Exception as exc:  # noqa: BLE001 - answer, and keep serving
            log.exception("request failed")
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(OSError):
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
            writer.close()
        self.last_request = time.monotonic()

    async def dispatch(self, request: dict) -> dict:
        op = request["op"]
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "stop":
            run = self.find(request["target"])
            run.request_stop("stop")
            return {"ok": True, "run": run.record}
        if op == "start":
            run = await self.start(request)
            return {"ok": True, "run": run.record}
        if op == "follow":
            run = await self.follow(request)
            return {"ok": True, "run": run.id}
        raise RunError(f"unknown request {op!r}")

    def find(self, target: str) -> Run:
        found = [r for r in self.runs.values() if r.id.startswith(target)] if len(target) >= 4 else []
        if not found:
            try:
                path, _ = resolve_notebook(target)
                found = [r for r in self.runs.values() if r.path == path]
            except RunError:
                pass
        if not found:
            raise RunError(f"no run of {target!r} is going on; see notebookctl runs")
        return found[0]

    async def start(self, request: dict) -> Run:
        if self.stopping.is_set():
            raise RunError("the container is stopping; start the run again once it is back")
        path, rel = resolve_notebook(request.get("notebook") or await asyncio.to_thread(
            self.notebook_of_kernel, request.get("kernel")))
        for other in self.runs.values():
            if other.path == path:
                raise RunError(f"{rel} is already being run (run {other.id}, {describe(other.record)}); wait for "
                               f"it, or end it with `notebookctl run --stop {rel}`.")
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise RunError(f"{rel} is not a notebook (not UTF-8 text).") from None
        except OSError as exc:
            raise RunError(f"{rel}: cannot read it ({exc.strerror}).") from None
        try:
            nb = nbfile.parse(text, rel)
            count = len(nb["cells"])
            if request.get("queued"):
                first, last = 1, count
            elif request.get("after"):
                first, last = cell_after(nb, request["after"], rel), count
            elif request.get("cells"):
                first, last = nbfile.parse_range(request["cells"], count)
            else:
                first, last = int(request.get("from") or 1), count
                if not 1 <= first <= count:
                    raise nbfile.NotebookError(f"--from {first}: the notebook has {count} cells.")
            ids_added = nbfile.ensure_ids(nb)  # in memory: the file is written only once every check passed
            nbfile.validate(nb)
        except nbfile.NotebookError as exc:
            raise RunError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - nbformat's ValidationError and friends
            raise RunError(f"{rel} is not a valid notebook: {str(exc).splitlines()[0]}. Open it in Jupyter or "
                           "VSCode and save it again.") from None
        cells = nbfile.plan(nb, first, last)
        if request.get("queued"):
            numbers = {c.get("id"): n for n, c in enumerate(nb["cells"], 1)}
            cells = [{"id": q["id"], "number": numbers.get(q["id"]), "source": q["source"], "given": True}
                     for q in request["queued"]]
        if not cells:
            raise RunError(f"{rel}: no code cells to run in cells {first}-{last}.")
        self.kernel_note = None
        kernel_id, kernel_name = await asyncio.to_thread(self.kernel_for, rel, nb, request.get("kernel"))
        if ids_added:
            import nbformat

            nbfile.atomic_write(path, nbformat.writes(nbformat.from_dict(nb), version=nbformat.NO_CONVERT))
        selection = "JupyterLab's cells left at a container stop" if request.get("queued") else \
            request.get("cells") or (f"{first}-" if first > 1 else "all")
        run = Run(self, path, rel, nb, cells, kernel_id, kernel_name, bool(request.get("keep_going")), selection,
                  resume=request.get("resume", True) is not False, resumed_from=request.get("resumed_from"))
        self.runs[run.id] = run
        if self.kernel_note:
            run.note(self.kernel_note)
        run.task = asyncio.ensure_future(run.main())
        log.info("run %s: %s, %d cells, kernel %s (%s)", run.id, rel, len(cells), kernel_id, kernel_name)
        return run

    async def follow(self, request: dict) -> FollowRun:
        """A cell JupyterLab is sending to a kernel (the server asks, and forwards it once answered): followed
        with the others that page sent the kernel, for the notebook of the kernel's session."""
        if self.stopping.is_set():
            raise RunError("the container is stopping")
        kernel_id = request["kernel"]
        for attempt in range(2):
            run = await self._follow_of(kernel_id)
            try:
                await run.add(request["msg_id"], request["cell_id"], request["code"], request["client"])
                return run
            except RunError:
                if attempt or not run.record.get("state") == "done":
                    raise  # (a follow that ended just now, after its linger, is replaced once)
        raise AssertionError("unreachable")

    async def _follow_of(self, kernel_id: str) -> FollowRun:
        async with self.follow_lock:
            run = self.follows.get(kernel_id)
            if run is None or run.stop_reason or run.task.done():
                record = paths.read_record(kernel_id)
                if record is None:
                    raise RunError(f"no running kernel {kernel_id[:8]}")
                path, rel = resolve_notebook(await asyncio.to_thread(self.notebook_of_kernel, kernel_id))
                try:
                    nb = nbfile.parse(await asyncio.to_thread(path.read_text), rel)
                except (OSError, UnicodeDecodeError, nbfile.NotebookError) as exc:
                    raise RunError(f"{rel} cannot be read as a notebook: {exc}") from None
                run = FollowRun(self, path, rel, nb, kernel_id, record.get("kernel_name") or "")
                self.runs[run.id] = run
                self.follows[kernel_id] = run
                run.task = asyncio.ensure_future(run.main())
                log.info("follow %s: cells JupyterLab sends kernel %s for %s", run.id, kernel_id[:8], rel)
            return run

    def notebook_of_kernel(self, kernel_id: str | None) -> str:
        """The notebook a running kernel belongs to (for %run_on_server): its sessions' paths that are notebook
        files, and the notebook whose cells it last ran (VSCode's sessions are named otherwise); exactly one."""
        if not kernel_id:
            raise RunError("no notebook given: name the notebook to run.")
        record = next((r for r in paths.live_records() if r.get("kernel_id") == kernel_id), None)
        if record is None:
            raise RunError(f"no running kernel {kernel_id[:8]}: name the notebook to run.")
        found = {s["path"].lstrip("/") for s in api("GET", "/api/sessions") or []
                 if (s.get("kernel") or {}).get("id") == kernel_id and s.get("path", "").endswith(".ipynb")
                 and (settings.WORKSPACE / s["path"].lstrip("/")).is_file()}
        if record.get("notebook"):
            found.add(record["notebook"])
        if not found:
            raise RunError("this kernel belongs to no notebook the server knows (no notebook file has it as its "
                           "session, and it ran no cell of one): name the notebook, e.g. %run_on_server a/b.ipynb")
        if len(found) > 1:
            raise RunError(f"this kernel runs {len(found)} notebooks ({', '.join(sorted(found))}): name the one to "
                           "run, e.g. %run_on_server " + sorted(found)[0])
        return found.pop()

    def kernel_for(self, rel: str, nb: dict, wanted: str | None) -> tuple[str, str]:
        """The kernel of the notebook's session, or one named, or a new session with the notebook's
        kernelspec (so that an editor attaching afterwards finds this kernel)."""
        sessions = [s for s in api("GET", "/api/sessions") or []
                    if (s.get("path") or "").lstrip("/") == rel and s.get("kernel")]
        # VSCode's sessions are named otherwise (NAME-jvsc-UUID.ipynb): its kernel is known by the cells it
        # ran (server.sessions.note_notebook). The most recent one of the notebook's kernels, said so.
        editor = sorted((r for r in paths.live_records() if r.get("notebook") == rel),
                        key=lambda r: r.get("notebook_seen") or 0, reverse=True)
        if editor and not wanted:
            chosen = editor[0]
            others = {s["kernel"]["id"] for s in sessions} | {r["kernel_id"] for r in editor[1:]}
            others.discard(chosen["kernel_id"])
            if others:
                self.kernel_note = (f"{rel} has {len(others) + 1} kernels (two editor windows?): ran in "
                                    f"{chosen['kernel_id'][:8]}, the one that ran a cell of it last")
            return chosen["kernel_id"], chosen["kernel_name"]
        session = sessions[0] if sessions else None
        specs = api("GET", "/api/kernelspecs")
        names = sorted(specs["kernelspecs"])
        if wanted:
            kernels = api("GET", "/api/kernels") or []
            by_id = [k for k in kernels if len(wanted) >= 4 and k["id"].startswith(wanted)]
            if len(by_id) > 1:
                raise RunError(f"--kernel {wanted} matches {len(by_id)} kernels; give more of its id.")
            if by_id:
                kernel = by_id[0]
                if session and session["kernel"]["id"] != kernel["id"]:
                    raise RunError(f"{rel} is open with kernel {session['kernel']['id'][:8]}; omit --kernel to "
                                   "run in it, or stop that kernel first (notebookctl kernels stop).")
                if not session:
                    api("POST", "/api/sessions", {"path": rel, "type": "notebook", "name": Path(rel).name,
                                                  "kernel": {"id": kernel["id"]}})
                return kernel["id"], kernel["name"]
            if wanted not in names:
                raise RunError(f"--kernel {wanted}: no running kernel has that id and no kernel has that name "
                               f"(kernels: {', '.join(names)}; running: notebookctl kernels).")
            name = wanted
        elif session:
            return session["kernel"]["id"], session["kernel"]["name"]
        else:
            name = ((nb.get("metadata") or {}).get("kernelspec") or {}).get("name") or specs["default"]
            if name not in names:
                raise RunError(f"{rel} asks for kernel {name!r} (metadata.kernelspec), which is not here "
                               f"(kernels: {', '.join(names)}). Run it with --kernel NAME.")
        if session:
            if session["kernel"]["name"] != name:
                raise RunError(f"{rel} is open with a {session['kernel']['name']} kernel, not {name}; omit "
                               "--kernel, or stop that kernel first (notebookctl kernels stop).")
            return session["kernel"]["id"], name
        made = api("POST", "/api/sessions", {"path": rel, "type": "notebook", "name": Path(rel).name,
                                             "kernel": {"name": name}})
        return made["kernel"]["id"], name

    # --- life -------------------------------------------------------------------------------------

    def container_stop(self) -> None:
        log.info("stopping: %d run(s) end here, each saving where it stopped", len(self.runs))
        self.stopping.set()
        for run in self.runs.values():
            run.request_stop("container stop")

    async def serve(self) -> int:
        paths.private_dir(paths.RUN_DIR)
        paths.private_dir(paths.RUNS_DIR)
        self.tidy_records()
        paths.RUNNER_SOCKET.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self.handle, path=str(paths.RUNNER_SOCKET))
        paths.RUNNER_SOCKET.chmod(0o600)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.container_stop)
        log.info("ready on %s", paths.RUNNER_SOCKET)
        await self.resume_runs()
        pending = await asyncio.to_thread(self.write_pending)
        last_tidy = last_pending = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 1.0)
            if self.stopping.is_set():
                break
            if pending and time.monotonic() - last_pending > SAVE_RETRY:
                pending = await asyncio.to_thread(self.write_pending)
                last_pending = time.monotonic()
            if not self.runs and not pending and time.monotonic() - self.last_request > IDLE_EXIT:
                log.info("nothing to run for %.0f s: exiting (notebookctl run starts it again)", IDLE_EXIT)
                break
            if time.monotonic() - last_tidy > 3600:
                self.tidy_records()
                last_tidy = time.monotonic()
        server.close()
        paths.RUNNER_SOCKET.unlink(missing_ok=True)
        tasks = [run.task for run in self.runs.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=4)  # within supervisord's stopwaitsecs
        return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="notebook-runner: %(message)s")
    return asyncio.run(Runner().serve())


if __name__ == "__main__":
    sys.exit(main())
