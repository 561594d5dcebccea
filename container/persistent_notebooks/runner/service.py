"""The runner's service: its socket, the runs and follows going on, their records tidied, runs resumed after a
container restart, outputs a full disk refused written once it can take them, and its idle exit."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

import zmq.asyncio

from .. import ipc, jupyterapi, paths, settings
from ..state import kernels as records
from ..state import runs
from ..state.runs import ACTIVE, PENDING_SUFFIX, RunRecord, RunState
from . import nbfile
from .follow import FollowRun
from .kernel import RunError, api
from .run import SAVE_RETRY, Run, cell_after, resolve_notebook

log = logging.getLogger("notebook-runner")
KEEP_FINISHED = 7 * 86400
IDLE_EXIT = 60.0  # seconds with no run and no request, then the runner exits (started again on demand)
# seconds runs to resume wait for Jupyter to answer: a container's start brings up the runner and Jupyter together,
# and Jupyter's start takes seconds (more on a loaded machine or with a slow user config)
JUPYTER_WAIT = 180.0


class Runner(ipc.Service):
    """The runner's service: its requests, the runs and follows going on, their records."""

    socket_path = paths.RUNNER_SOCKET
    idle_exit = IDLE_EXIT
    idle_note = "nothing to run for %.0f s: exiting (notebookctl run starts it again)"
    log_name = "notebook-runner"
    probes = frozenset({"ping"})  # the watchdog's, every few seconds

    def __init__(self) -> None:
        super().__init__()
        self.context = zmq.asyncio.Context()
        self.runs: dict[str, Run] = {}
        self.unwritten = 0  # runs whose kept outputs wait to be written
        self.last_pending = self.last_tidy = time.monotonic()
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
        if self.follows.get(run.record.kernel_id) is run:
            del self.follows[run.record.kernel_id]
        self.last_request = time.monotonic()

    # --- records --------------------------------------------------------------------------------

    def tidy_records(self) -> None:
        """Runs another runner left active (it was killed) are marked interrupted; old ones go."""
        if not paths.RUNS_DIR.is_dir():
            return
        for path in paths.RUNS_DIR.glob("*.json"):
            record = runs.load(path)
            if record is None:
                continue
            if record.cut_short() and record.id not in self.runs:
                record.mark_cut_short()
                record.ended = record.updated or time.time()
                runs.save(record)
                # The notebook's own record of the run said "running": it says what happened instead.
                nbfile.correct_run_metadata(Path(record.saved_to or record.path or "/nonexistent"),
                                            record.id, {"state": RunState.INTERRUPTED, "status": record.describe()})
            elif record.state not in ACTIVE and time.time() - (record.ended or 0) > KEEP_FINISHED:
                path.unlink(missing_ok=True)

    def write_pending(self) -> int:
        """Outputs kept in the state volume by a run whose runner ended before its notebook could take them
        (Run.keep_pending): written into the notebook now if it can take them (a side file if its cells are
        gone), the run's record saying so. Returns how many are still waiting."""
        left = 0
        for pending in runs.pending_outputs():
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
        record = runs.load(runs.record_path(run_id))
        if record is None:
            return
        record.notes.append(text)
        if saved_to is not None:
            record.write_error = None
            if saved_to != record.path:
                record.saved_to = saved_to
        with contextlib.suppress(OSError):
            runs.save(record)

    async def jupyter_answers(self) -> bool:
        """Wait, up to JUPYTER_WAIT, until Jupyter answers at all (an error answer counts: the run's start names it)."""
        deadline = time.monotonic() + JUPYTER_WAIT
        while not self.stopping.is_set():
            try:
                await asyncio.to_thread(jupyterapi.api, "GET", "/api/status", None, 5)
                return True
            except jupyterapi.Unreachable:
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.25)
            except jupyterapi.ApiError:
                return True
        return False

    async def resume_runs(self) -> None:
        """Runs that a container stop or crash cut short go on in their restored kernels, from the cell
        that was running, to the end of what they were to run, once Jupyter answers."""
        if not any(old.resumable() for old in runs.all_runs()):
            return
        if not await self.jupyter_answers():
            if self.stopping.is_set():
                return  # the container stops again: the runs stay to resume at its next start
            log.warning("Jupyter did not answer within %.0f s: the runs to resume are tried now", JUPYTER_WAIT)
        for old in runs.all_runs():
            if not old.resumable():
                continue
            request = {"notebook": old.notebook, "kernel": old.kernel_id, "keep_going": old.keep_going,
                       "cells": f"{old.cell}-{old.last_cell or ''}"}
            if old.queued:  # JupyterLab's cells (FollowRun): the code its page sent, not a range of the file
                request.update(cells=None, queued=old.queued, keep_going=False)
            try:
                run = await self.start(request, resumed_from=old)
                old.resumed_by = run.id
                log.info("run %s resumes run %s (%s) from cell %s", run.id, old.id, old.notebook, old.cell)
            except RunError as exc:
                old.resumed_by, old.resume_error = "-", str(exc)
                log.warning("run %s of %s could not be resumed: %s", old.id, old.notebook, exc)
            old.state = RunState.INTERRUPTED
            runs.save(old)

    # --- requests -------------------------------------------------------------------------------

    async def answer(self, request: dict) -> tuple[dict, None]:
        try:
            return await self.dispatch(request), None
        except RunError as exc:
            return {"ok": False, "error": str(exc)}, None
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": f"bad request: {exc}"}, None

    async def dispatch(self, request: dict) -> dict:
        op = request["op"]
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "stop":
            run = self.find(request["target"])
            run.request_stop("stop")
            return {"ok": True, "run": dataclasses.asdict(run.record)}
        if op == "start":
            run = await self.start(request)
            return {"ok": True, "run": dataclasses.asdict(run.record)}
        if op == "follow":
            run = await self.follow(request)
            return {"ok": True, "run": run.id}
        raise RunError(f"unknown request {op!r}")

    def find(self, target: str) -> Run:
        found = [r for r in self.runs.values() if r.id.startswith(target)] if len(target) >= 4 else []
        if not found:
            try:
                path, _ = resolve_notebook(target)
                # a run of the notebook before JupyterLab's cells followed in it (those end with the page's cells)
                found = sorted((r for r in self.runs.values() if r.path == path),
                               key=lambda r: isinstance(r, FollowRun))
            except RunError:
                pass
        if not found:
            raise RunError(f"no run of {target!r} is going on; see notebookctl runs")
        return found[0]

    async def start(self, request: dict, resumed_from: RunRecord | None = None) -> Run:
        """A run as asked (a request of the socket), or going on from a run a container stop cut short."""
        if self.stopping.is_set():
            raise RunError("the container is stopping; start the run again once it is back")
        path, rel = resolve_notebook(request.get("notebook") or await asyncio.to_thread(
            self.notebook_of_kernel, request.get("kernel")))
        for other in self.runs.values():
            # (JupyterLab's cells followed are no run of the notebook: %run_on_server from JupyterLab is one of them)
            if other.path == path and not isinstance(other, FollowRun):
                raise RunError(f"{rel} is already being run (run {other.id}, {other.record.describe()}); wait for "
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
                  resume=request.get("resume", True) is not False, resumed_from=resumed_from)
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
                if attempt or run.record.state != RunState.DONE:
                    raise  # (a follow that ended just now, after its linger, is replaced once)
        raise AssertionError("unreachable")

    async def _follow_of(self, kernel_id: str) -> FollowRun:
        async with self.follow_lock:
            run = self.follows.get(kernel_id)
            if run is None or run.stop_reason or run.task.done():
                record = records.read(kernel_id)
                if record is None:
                    raise RunError(f"no running kernel {kernel_id[:8]}")
                path, rel = resolve_notebook(await asyncio.to_thread(self.notebook_of_kernel, kernel_id))
                try:
                    nb = nbfile.parse(await asyncio.to_thread(path.read_text), rel)
                except (OSError, UnicodeDecodeError, nbfile.NotebookError) as exc:
                    raise RunError(f"{rel} cannot be read as a notebook: {exc}") from None
                run = FollowRun(self, path, rel, nb, kernel_id, record.kernel_name)
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
        record = next((r for r in records.live() if r.kernel_id == kernel_id), None)
        if record is None:
            raise RunError(f"no running kernel {kernel_id[:8]}: name the notebook to run.")
        found = {s["path"].lstrip("/") for s in api("GET", "/api/sessions") or []
                 if (s.get("kernel") or {}).get("id") == kernel_id and s.get("path", "").endswith(".ipynb")
                 and (settings.WORKSPACE / s["path"].lstrip("/")).is_file()}
        if record.notebook:
            found.add(record.notebook)
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
        editor = sorted((r for r in records.live() if r.notebook == rel),
                        key=lambda r: r.notebook_seen or 0, reverse=True)
        if editor and not wanted:
            chosen = editor[0]
            others = {s["kernel"]["id"] for s in sessions} | {r.kernel_id for r in editor[1:]}
            others.discard(chosen.kernel_id)
            if others:
                self.kernel_note = (f"{rel} has {len(others) + 1} kernels (two editor windows?): ran in "
                                    f"{chosen.kernel_id[:8]}, the one that ran a cell of it last")
            return chosen.kernel_id, chosen.kernel_name
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

    def stop_requested(self) -> None:
        log.info("stopping: %d run(s) end here, each saving where it stopped", len(self.runs))
        for run in self.runs.values():
            run.request_stop("container stop")

    async def started(self) -> None:
        log.info("ready on %s", paths.RUNNER_SOCKET)
        await self.resume_runs()
        self.unwritten = await asyncio.to_thread(self.write_pending)

    async def tick(self) -> None:
        if self.unwritten and time.monotonic() - self.last_pending > SAVE_RETRY:
            self.unwritten = await asyncio.to_thread(self.write_pending)
            self.last_pending = time.monotonic()
        if time.monotonic() - self.last_tidy > 3600:
            self.tidy_records()
            self.last_tidy = time.monotonic()

    def busy(self) -> bool:
        return bool(self.runs or self.unwritten)

    async def stopped(self) -> None:
        tasks = [run.task for run in self.runs.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=4)  # within supervisord's stopwaitsecs

    async def run(self) -> int:
        paths.private_dir(paths.RUN_DIR)
        paths.private_dir(paths.RUNS_DIR)
        self.tidy_records()
        return await super().run()


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="notebook-runner: %(message)s")
    return asyncio.run(Runner().run())
