"""The cells a JupyterLab page sent a kernel, followed on its IOPub, their outputs into the notebook once the page
is gone (the server hands each cell over before the kernel gets it: server/follow.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import jupyterapi
from ..state import kernels as records
from ..state.runs import RunState
from . import nbfile
from .kernel import KernelChannels, RunError
from .run import TICK, Run

if TYPE_CHECKING:
    from .service import Runner

log = logging.getLogger("notebook-runner")
PAGE_CHECK = 2.0  # seconds between checks that the page which sent followed cells is still connected
FOLLOW_LINGER = 30.0  # seconds a follow goes on after its last cell ended, for the next cells of the page
HANDOVER_GRACE = 150.0  # seconds a connected page has to save the outputs itself (JupyterLab autosaves every 120)
FOLLOW_READY_TIMEOUT = 10.0
JUPYTER_GONE = 30.0  # seconds Jupyter may not answer (a restart takes a few) before the page counts as gone


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
        self.unanswered_since: float | None = None  # since when Jupyter has not answered the page check
        self.last_activity = time.monotonic()
        self.ended_at: float | None = None  # when the last followed cell ended
        self.ended_wall = 0.0  # ... as the clock of file times counts
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
            raise RunError(f"following kernel {self.record.kernel_id[:8]} ended: {self.record.error}")
        self.channels.expected.add(msg_id)
        self.sent[msg_id] = FollowedCell(msg_id, cell_id, source)
        self.clients.add(client)
        self.ended_at = None
        self.last_activity = time.monotonic()
        self.record.cells_total = len(self.sent)
        self.save_record(force=False)

    def writing_due(self) -> bool:
        if self.stop_reason or not self.page_connected:
            return True
        return self.ended_at is not None and time.monotonic() - self.ended_at > HANDOVER_GRACE

    async def flush(self, force: bool = False) -> None:
        if not self.writing_due():
            return
        if not self.path.exists():  # deleted by its user (JupyterLab's own copy goes with it): nothing to keep
            if self.dirty:
                self.note(f"{self.record.notebook} was deleted: the outputs of its cells were not written")
            self.dirty = False
            return
        await super().flush(force)

    def page_still_connected(self) -> bool | None:
        """Whether a page that sent the cells is connected now; None while Jupyter does not answer (it restarts: the
        page reconnects by itself within seconds)."""
        try:
            model = jupyterapi.api("GET", f"/api/kernels/{self.record.kernel_id}", timeout=5) or {}
        except jupyterapi.ApiError:
            return None
        return bool(set(model.get("clients") or []) & self.clients)

    def file_holds_outputs(self) -> bool:
        """The page saved the followed cells' outputs itself: saved after the last of them ended (an autosave during
        a cell holds part of its output), each cell's count in the file the one it ran with."""
        try:
            if self.path.stat().st_mtime <= self.ended_wall:
                return False
        except OSError:
            return False
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
                self.record.cell = numbers.get(cell.cell_id) or f"{cell.cell_id[:8]} (not saved)"
                self.set_state(RunState.RUNNING)
            elif state == "idle":
                cell.done = True
                self.record.cells_done = sum(c.done for c in self.sent.values())
                if all(c.done for c in self.sent.values()):
                    self.ended_at, self.ended_wall = time.monotonic(), time.time()
            return
        if msg_type == "execute_input" or cell.cell_id not in self.results:  # a new execution replaces the last
            self.results[cell.cell_id] = nbfile.CellOutputs(self.displays)
            self.sources[cell.cell_id] = cell.source
        if self.results[cell.cell_id].add(msg_type, msg["content"]):
            self.dirty = True

    async def main(self) -> None:
        try:
            kid = self.record.kernel_id
            record = records.read(kid)
            if record is None or not record.alive():
                raise RunError(f"kernel {kid} has no live record in the state volume")
            self.kernel_record = record
            self.channels = KernelChannels(record, self.runner.context)
            await self.channels.ready(self.kernel_alive)
            self.following.set()
            await self.follow()
        except RunError as exc:
            self.set_state(RunState.FAILED, error=str(exc), ended=time.time())
        except Exception as exc:  # noqa: BLE001 - a bug must end this follow, recorded, not the runner
            log.exception("follow %s failed", self.id)
            self.set_state(RunState.FAILED, error=f"{type(exc).__name__}: {exc}", ended=time.time())
        finally:
            self.stop_reason = self.stop_reason or "ended"  # no more cells join; what is held is written
            self.following.set()
            try:
                if self.channels is not None:
                    self.channels.close()
                if self.dirty:
                    await self.flush(force=True)
                await self.save_until_saved()
                self.save_record()
            except Exception:  # noqa: BLE001 - logged; the follow ends all the same (the runner's idle exit)
                log.exception("follow %s: its end failed", self.id)
            finally:
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
                connected = await asyncio.to_thread(self.page_still_connected)
                if connected is not None:
                    self.page_connected, self.unanswered_since = connected, None
                elif self.unanswered_since is None:
                    self.unanswered_since = now
                elif now - self.unanswered_since > JUPYTER_GONE:
                    self.page_connected = False  # Jupyter down this long: no page sees anything
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
            self.record.resume, self.record.queued = True, [{"id": c.cell_id, "source": c.source} for c in left]
            self.set_state(RunState.INTERRUPTED, reason="a container stop", ended=time.time())
        else:
            self.set_state(RunState.DONE, ended=time.time())
