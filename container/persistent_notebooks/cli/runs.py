"""`notebookctl run` and `notebookctl runs`: the client side of the notebook runner (../runner).

Starts the runner when it is not running (a supervisord program started on demand), sends it one
request, and reads the run records it keeps in the state volume (state/runs.py; the runner is their
only writer).
"""

from __future__ import annotations

import sys
import time

from .. import ipc, paths, programs
from ..state.runs import ACTIVE, RunRecord, RunState, read_run

# seconds for the runner to answer: one started on demand, or a new one once the watchdog has replaced a hung one
# (its probes fail for 10 s, then it kills it: 20 s or more on a busy machine)
START_TIMEOUT = 60.0
WAITING_NOTE_AFTER = 5.0


class RunsError(Exception):
    """Something the user must know or fix; the message says what."""


# --- talking to the runner --------------------------------------------------------------------

def _ask(request: dict, timeout: float) -> dict:
    return ipc.request_sync(paths.RUNNER_SOCKET, request, timeout)[0]


def start_runner() -> None:
    """Ask supervisord to start the runner (it is not started with the container, and ends when idle)."""
    try:
        programs.start(programs.RUNNER, timeout=30)
    except programs.ProgramError as exc:
        raise RunsError(f"could not start the notebook runner: {exc} (see `docker compose logs notebooks`)") from None


def request(op: str, timeout: float = 120, **fields) -> dict:
    """Send one request to the runner, starting it when it is not there (again after half of START_TIMEOUT, in case
    the watchdog was replacing a hung one); its reply."""
    began = time.monotonic()
    started = noted = False
    while True:
        try:
            reply = _ask({"op": op, **fields}, timeout)
            break
        except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError, ConnectionError):
            waited = time.monotonic() - began
            if not noted and waited > WAITING_NOTE_AFTER:
                print("notebookctl: waiting for the notebook runner to answer (a hung one is replaced within about "
                      "20 s)...", file=sys.stderr, flush=True)
                noted = True
            if waited > START_TIMEOUT:
                raise RunsError(f"the notebook runner did not answer within {START_TIMEOUT:.0f} s "
                                "(see `docker compose logs notebooks`)") from None
            if not started or waited > START_TIMEOUT / 2:
                start_runner()
                started = True
            time.sleep(0.1)
        except TimeoutError:
            raise RunsError(f"the notebook runner did not reply within {timeout:.0f} s") from None
    if not reply.get("ok"):
        raise RunsError(reply.get("error") or "the runner refused the request")
    return reply


def request_run(op: str, timeout: float = 120, **fields) -> RunRecord:
    """A request the runner answers with a run's record (start, stop): that record."""
    try:
        return RunRecord.from_dict(request(op, timeout, **fields).get("run"))
    except ValueError as exc:
        raise RunsError(f"the runner's reply holds no run record: {exc}") from None


# --- showing --------------------------------------------------------------------------------------

def elapsed(record: RunRecord) -> float:
    return max(0.0, (record.ended or time.time()) - (record.started or time.time()))


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def bar(done: int, total: int, width: int = 20) -> str:
    filled = round(width * done / total) if total else width
    return "[" + "#" * filled + "." * (width - filled) + "]"


def progress_line(record: RunRecord) -> str:
    done, total = record.cells_done, record.cells_total
    return f"{bar(done, total)} {done}/{total} cells  {clock(elapsed(record))}  {record.describe()}"


def table(runs: list[RunRecord]) -> str:
    from .kernels import columns

    if not runs:
        return "no runs yet: notebookctl run NOTEBOOK"
    rows = [["RUN", "NOTEBOOK", "KERNEL", "PROGRESS", "ELAPSED", "STATE"]]
    for r in runs:
        done, total = r.cells_done, r.cells_total
        state = r.describe() + (f"; saved to {r.saved_to}" if r.saved_to else "")
        if r.write_error:
            state += f"; {r.write_error}"
        rows.append([r.id, r.notebook, (r.kernel_id or "-")[:8],
                     f"{bar(done, total, 10)} {done}/{total}", clock(elapsed(r)), state])
    return "\n".join(columns(rows))


def follow(run_id: str, out=sys.stderr) -> int:
    """Show a run's progress until it ends (Ctrl-C detaches; the run goes on). 0 if it ended done."""
    tty = out.isatty()
    last = None
    try:
        while True:
            record = read_run(run_id)
            if record is None:
                raise RunsError(f"no run {run_id}")
            line = progress_line(record)
            if tty:
                out.write("\r\x1b[K" + line)
                out.flush()
            elif line.split("  ", 2)[::2] != (last or "").split("  ", 2)[::2]:
                print(line, file=out, flush=True)
            last = line
            if record.state not in ACTIVE:
                if tty:
                    out.write("\n")
                for note in record.notes:
                    print(f"note: {note}", file=out)
                if record.saved_to:
                    print(f"outputs saved to {record.saved_to}", file=out)
                return 0 if record.state == RunState.DONE and not record.errors else 1
            time.sleep(0.2)
    except KeyboardInterrupt:
        if tty:
            out.write("\n")
        print(f"detached; run {run_id} goes on (notebookctl runs)", file=out)
        return 0
