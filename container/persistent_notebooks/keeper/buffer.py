"""What the kernel keeper keeps of one kernel's output: the pure logic, no sockets (unit-tested).

Every IOPub message no client has been sent yet is kept, in order and as the raw signed frames;
the Jupyter server acknowledges what a client has read (`ack`) and everything up to it goes. The
buffer is bounded (NOTEBOOK_AWAY_BUFFER bytes): past it the oldest messages are dropped and counted,
and the next client gets a notice first, in the cell of the oldest kept output, saying how much.
A stream message bigger than the whole buffer keeps the end of its text.

The marker hooks (`mark`, `unmark`) let the program keep a file in the state volume while output is
held, so that a keeper that restarts can tell the next client what was lost.
"""

from __future__ import annotations

import json
import time
from collections import deque

from ..wire import Signer, split

OVERHEAD = 256  # bytes counted per kept message on top of its frames (Python objects)
# Status messages in reply to these do not change whether the kernel is busy (as in jupyter_server).
UNTRACKED_PARENTS = {"kernel_info_request", "comm_info_request", "shutdown_request", "interrupt_request",
                     "debug_request", "usage_request"}


class OutputBuffer:
    """One kernel's output not yet delivered to any client, bounded to `limit` bytes (0: keep nothing)."""

    def __init__(self, signer: Signer, limit: int) -> None:
        self.signer = signer
        self.limit = limit
        self.messages: deque[tuple[int, str, list[bytes], int]] = deque()  # (seq, msg_id, frames, size)
        self.index: dict[str, int] = {}  # msg_id -> seq, for what is kept
        self.size = 0
        self.seq = 0
        self.received = 0  # every message the kernel published that reached this keeper (status: diagnosis)
        # When (time.time()) the first of them arrived: what is kept has no gap since then, so a client that
        # subscribed later gets it all before its own live stream (server/handover.py).
        self.since: float | None = None
        self.dropped = self.dropped_bytes = 0
        self.pending_ack: str | None = None  # acknowledged before this keeper received it
        self.execution_state = "unknown"
        self.state_of = ""  # the msg_id of the request whose status set execution_state (its cell)
        self.last_message = time.time()
        self.marked = False
        self.marked_parent = b""  # the parent header the marker holds
        # (parent header bytes, time) of output a keeper before this one held and lost (see program).
        self.lost: tuple[bytes, float] | None = None

    # --- hooks (the program writes and removes its marker file) ---------------------------------------

    def mark(self, parent: bytes) -> None:
        self.marked, self.marked_parent = True, parent

    def unmark(self) -> None:
        """The marker goes once nothing is kept and no loss is left to tell."""
        if self.marked and not self.messages and self.lost is None:
            self.marked = False

    # --- messages ---------------------------------------------------------------------------------------

    def add(self, frames: list[bytes]) -> None:
        """A message the kernel published (ValueError, KeyError or IndexError for a malformed one)."""
        header, i = split(frames)
        msg_id = header["msg_id"]
        self.received += 1
        self.last_message = time.time()
        if self.since is None:
            self.since = self.last_message
        if header.get("msg_type") == "status":
            parent = json.loads(frames[i + 3])
            if parent.get("msg_type") not in UNTRACKED_PARENTS:
                self.execution_state = json.loads(frames[i + 5]).get("execution_state", self.execution_state)
                self.state_of = parent.get("msg_id", "")
        if self.limit <= 0:  # NOTEBOOK_AWAY_BUFFER=0: keep nothing
            return
        if msg_id == self.pending_ack:  # a client already has it, and everything before it
            self.pending_ack = None
            self.clear()
            return
        self.seq += 1
        # The marker names the cell the newest kept output belongs to (rewritten once per cell): a
        # message of no cell (the iopub_welcome a kernel sends each new subscriber) names none.
        parent = frames[i + 3]
        if (not self.messages and not self.marked) or (parent != b"{}" and parent != self.marked_parent):
            self.mark(parent)
        size = sum(len(f) for f in frames) + OVERHEAD
        if size > self.limit and header.get("msg_type") == "stream":
            frames = self.newest_part(frames, i)
            size = sum(len(f) for f in frames) + OVERHEAD
            # Everything kept so far is older than the part just cut: it goes too, so that what is kept
            # stays one unbroken stretch of the newest output (not older lines, a gap, then the rest).
            while self.messages:
                self.dropped += 1
                self.dropped_bytes += self.drop_oldest() - OVERHEAD
        self.messages.append((self.seq, msg_id, frames, size))
        self.index[msg_id] = self.seq
        self.size += size
        while self.size > self.limit and len(self.messages) > 1:
            self.dropped += 1
            self.dropped_bytes += self.drop_oldest() - OVERHEAD

    def newest_part(self, frames: list[bytes], i: int) -> list[bytes]:
        """A stream message bigger than the whole buffer (100 MiB printed at once): keep the end of its
        text, half the buffer's worth, re-signed under the same message id; the rest counts as dropped."""
        content = json.loads(frames[i + 5])
        data = str(content.get("text", "")).encode()
        keep = max(self.limit // 2, 1)
        tail = data[-keep:].decode("utf-8", "ignore")
        self.dropped += 1
        self.dropped_bytes += len(data) - len(tail.encode())
        return self.signer.with_content(frames, i, {**content, "text": tail})

    def drop_oldest(self) -> int:
        """Forget the oldest kept message; return its counted size."""
        _, old_id, _, old_size = self.messages.popleft()
        del self.index[old_id]
        self.size -= old_size
        return old_size

    def clear(self) -> None:
        self.messages.clear()
        self.index.clear()
        self.size = 0
        self.unmark()

    def ack(self, msg_id: str) -> None:
        """A client has read everything up to msg_id: keep only what came after it."""
        seq = self.index.get(msg_id)
        if seq is None:
            self.pending_ack = msg_id
            return
        while self.messages and self.messages[0][0] <= seq:
            self.drop_oldest()
        self.dropped = self.dropped_bytes = 0
        self.unmark()

    def fetch(self, after: str | None) -> list[list[bytes]]:
        """What no client has had: all that is kept (after=None), or what came after msg_id `after`."""
        seq = self.index.get(after) if after else None
        kept = [frames for s, _, frames, _ in self.messages if seq is None or s > seq]
        if after is None and self.dropped and self.messages:
            kept.insert(0, self.dropped_note())
        if self.lost is not None and (after is None or seq is None):
            kept.insert(0, self.lost_note())
            self.lost = None
            self.unmark()
        return kept

    # --- notices ----------------------------------------------------------------------------------------

    def dropped_note(self) -> list[bytes]:
        """A stream message, in the cell of the oldest kept message, saying what was dropped."""
        _, _, frames, _ = self.messages[0]
        _, i = split(frames)
        parent = json.loads(frames[i + 3]) or json.loads(frames[i + 2])
        text = (f"[persistent-notebooks: {self.dropped} earlier output messages (or their beginnings) "
                f"({self.dropped_bytes / 2**20:.1f} MiB) printed while no client was connected were dropped: "
                f"more than NOTEBOOK_AWAY_BUFFER={self.limit / 2**20:g} MiB is kept per kernel. "
                "The newest output follows.]\n")
        return self.signer.stream(text, parent)

    def lost_note(self) -> list[bytes]:
        """A stream message, in the cell whose output was kept when the keeper ended, saying it is lost."""
        parent_bytes, when = self.lost
        try:
            parent = json.loads(parent_bytes)
        except ValueError:
            parent = {}
        stamp = time.strftime("%H:%M:%S UTC", time.gmtime(when))
        text = (f"[persistent-notebooks: the kernel keeper was restarted at {stamp} or later; output this kernel "
                "printed before that while no client was connected was kept in its memory and is lost. Later "
                "output follows.]\n")
        return self.signer.stream(text, parent if isinstance(parent, dict) else {})

    def status(self) -> dict:
        return {"kept_messages": len(self.messages), "kept_bytes": self.size, "dropped": self.dropped,
                "received": self.received, "since": self.since,
                "execution_state": self.execution_state, "state_of": self.state_of,
                "last_message": self.last_message}
