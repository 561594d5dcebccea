"""JupyterLab's cells, handed to the notebook runner as they go by: it follows them on the kernel's IOPub and
writes their outputs into the notebook once the page that sent them is gone (runner FollowRun).

The connection asks before it forwards a cell's execute request, so that no output of it can be missed; the
runner is started on demand. If it does not answer within ASK_TIMEOUT the cell goes to the kernel anyway,
unfollowed (said in the log): the page never waits long on us.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass

from .. import ipc, paths, programs

ASK_TIMEOUT = 10.0  # the runner's start (on demand) included
PAUSE = 30.0  # seconds no cell is handed over after the runner failed to answer (a hung one is replaced meanwhile)
_paused_until = 0.0
log = logging.getLogger("ServerApp")


@dataclass(frozen=True)
class SentCell:
    """An execute request of a JupyterLab cell, as the server forwards it to the kernel."""

    kernel: str
    client: str  # the page's kernel client (its websocket's session_id)
    msg_id: str
    cell_id: str
    code: str


def lab_cell(kernel_id: str, client: str, header: dict, metadata: dict, content: dict) -> SentCell | None:
    """The cell, if this message is JupyterLab's execute request of a notebook cell (metadata.cellId is the
    cell's id; VSCode's is a URI, and its notebook is its own to save)."""
    cell_id = metadata.get("cellId")
    if header.get("msg_type") != "execute_request" or not isinstance(cell_id, str) or ":" in cell_id:
        return None
    if content.get("silent") or not isinstance(content.get("code"), str):
        return None
    return SentCell(kernel_id, client or "", str(header.get("msg_id")), cell_id, content["code"])


async def hand_over(cell: SentCell) -> bool:
    """Have the runner follow the cell; True once it does, False (logged) if it cannot within ASK_TIMEOUT (and then
    for PAUSE seconds no cell waits on it)."""
    global _paused_until
    if time.monotonic() < _paused_until:
        return False
    deadline = time.monotonic() + ASK_TIMEOUT
    started = False
    while True:
        try:
            reply, _ = await ipc.request(paths.RUNNER_SOCKET, {"op": "follow", **asdict(cell)},
                                         max(0.1, deadline - time.monotonic()))
            if not reply.get("ok"):
                log.info("persistent-notebooks: cell %s of kernel %s not followed: %s", cell.cell_id[:8],
                         cell.kernel[:8], reply.get("error"))
            return bool(reply.get("ok"))
        except (FileNotFoundError, ConnectionError, ValueError):  # not there yet, or on its way out
            if time.monotonic() > deadline:
                break
            if not started:
                started = True
                try:
                    await asyncio.to_thread(programs.start, programs.RUNNER)
                except programs.ProgramError as exc:
                    log.warning("persistent-notebooks: %s", exc)
                    return False
            await asyncio.sleep(0.1)
        except (TimeoutError, OSError):
            break
    _paused_until = time.monotonic() + PAUSE
    log.warning("persistent-notebooks: the notebook runner did not answer within %.0f s: cell %s of kernel %s "
                "runs unfollowed (its outputs reach the file only when JupyterLab saves it), and so do the cells of "
                "the next %.0f s", ASK_TIMEOUT, cell.cell_id[:8], cell.kernel[:8], PAUSE)
    return False
