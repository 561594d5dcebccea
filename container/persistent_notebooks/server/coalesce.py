"""Stream output, coalesced: consecutive stdout/stderr messages of one cell become one message.

Jupyter protects a client from an output flood by dropping IOPub messages past a rate ("IOPub
message rate exceeded"): a cell printing 10,000 lines, one message each, reaches a connected client
with thousands of them missing. Here nothing is dropped: a stream message goes out at once when
none went out in the last INTERVAL seconds; otherwise it waits, and the stream messages that follow
it are appended to it (same cell and stream name) or to a run of their own, until INTERVAL has
passed or MAX_TEXT characters are waiting. So a client gets a few stream messages per INTERVAL,
every character of them, in order (stdout and stderr alternating line by line: in order within each
stream); any other message (a result, a status) sends what waits first, so a cell's output never
comes after its idle status.

Used by the kernel websocket (connection.py) for live output and for the output kept while away.
A merged message carries the header of the last message in it, so its msg_id is the newest one
covered: acknowledging it to the keeper acknowledges everything in it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import NamedTuple

from ..wire import DELIM

INTERVAL = 0.05  # seconds between two stream messages to one client, at most ~20 a second
MAX_TEXT = 1 << 20  # characters merged into one message before it goes out regardless
MAX_RUNS = 4  # runs (cell and stream) sent as they are in one window; past it, one message per cell and stream


class Stream(NamedTuple):
    """What coalescing needs of a raw IOPub message; None for anything that is not plain stream text."""

    key: tuple[str, str]  # (the cell's msg_id, stdout or stderr)
    header: dict
    parent: bytes
    metadata: bytes
    text: str


def stream_of(msg_list: list) -> Stream | None:
    """Parse a raw (signed, maybe with identities) IOPub message if it is a stream message."""
    try:
        i = msg_list.index(DELIM)
        parts = [bytes(p) for p in msg_list[i + 2:i + 6]]
        if len(msg_list) != i + 6:  # buffers: not plain text
            return None
        header = json.loads(parts[0])
        if header.get("msg_type") != "stream":
            return None
        content = json.loads(parts[3])
        parent_id = json.loads(parts[1]).get("msg_id", "")
        name, text = content.get("name"), content.get("text")
        if not isinstance(name, str) or not isinstance(text, str) or set(content) - {"name", "text"}:
            return None
        return Stream((parent_id, name), header, parts[1], parts[2], text)
    except (ValueError, TypeError, AttributeError):
        return None


def merged(session, streams: list[Stream]) -> list[bytes]:
    """One signed message with the text of all of `streams` (one cell, one stream name)."""
    last = streams[-1]
    parts = [json.dumps(last.header).encode(), last.parent, last.metadata,
             json.dumps({"name": last.key[1], "text": "".join(s.text for s in streams)}).encode()]
    return [DELIM, session.sign(parts), *parts]


def coalesce(session, messages: list[list]) -> list[tuple[list, list[list]]]:
    """Merge runs of stream messages of one cell and stream name (the output kept while away).

    Returns (message to send, the original messages it covers) pairs, in order.
    """
    out: list[tuple[list, list[list]]] = []
    run: list[Stream] = []
    raw: list[list] = []
    size = 0
    for msg_list in [*messages, None]:
        stream = None if msg_list is None else stream_of(msg_list)
        if run and (stream is None or run[-1].key != stream.key or size + len(stream.text) > MAX_TEXT):
            out.append((merged(session, run) if len(run) > 1 else raw[0], raw))
            run, raw, size = [], [], 0
        if stream is not None:
            run.append(stream)
            raw.append(msg_list)
            size += len(stream.text)
        elif msg_list is not None:
            out.append((msg_list, [msg_list]))
    return out


class Coalescer:
    """Live coalescing for one client: push() every IOPub message, emit() gets what goes out.

    Stream messages wait in runs (one cell and stream name each, in order); a flush sends each run as one
    message. Output that alternates stdout and stderr faster than that (a run per line) is sent, past
    MAX_RUNS runs in a window, as one message per cell and stream, in the order of their last lines:
    every character, at most a few messages per window, order kept within each stream."""

    def __init__(self, session, emit: Callable[[list], None], clock: Callable[[], float],
                 call_later: Callable[[float, Callable[[], None]], object],
                 cancel: Callable[[object], None], interval: float = INTERVAL) -> None:
        self.session, self.emit, self.clock = session, emit, clock
        self.call_later, self.cancel, self.interval = call_later, cancel, interval
        self.runs: list[tuple[list[Stream], list[list]]] = []  # waiting: (streams, raw messages) per run
        self.size = 0
        self.last_out = float("-inf")
        self.timer = None

    def push(self, msg_list: list) -> None:
        stream = stream_of(msg_list)
        if stream is None:
            self.flush()
            self.emit(msg_list)
            return
        if not self.runs and self.clock() - self.last_out >= self.interval:
            self.last_out = self.clock()
            self.emit(msg_list)
            return
        if self.runs and self.runs[-1][0][-1].key == stream.key:
            self.runs[-1][0].append(stream)
            self.runs[-1][1].append(msg_list)
        else:
            self.runs.append(([stream], [msg_list]))
        self.size += len(stream.text)
        if self.size >= MAX_TEXT:
            self.flush()
        elif self.timer is None:
            self.timer = self.call_later(max(0.0, self.last_out + self.interval - self.clock()), self._due)

    def _due(self) -> None:
        self.timer = None
        self.flush()

    def flush(self) -> None:
        """Send what waits now (before another message, or when the connection closes)."""
        if self.timer is not None:
            self.cancel(self.timer)
            self.timer = None
        if not self.runs:
            return
        runs, self.runs, self.size = self.runs, [], 0
        self.last_out = self.clock()
        if len(runs) > MAX_RUNS:
            # One per cell and stream, ordered by their last message: the last one sent is the newest, so
            # acknowledging it acknowledges all.
            by_key: dict[tuple[str, str], tuple[list[Stream], list[list], int]] = {}
            for position, (streams, raw) in enumerate(runs):
                merged_streams, merged_raw, _ = by_key.get(streams[0].key, ([], [], 0))
                by_key[streams[0].key] = (merged_streams + streams, merged_raw + raw, position)
            runs = [(streams, raw) for streams, raw, _ in sorted(by_key.values(), key=lambda run: run[2])]
        for streams, raw in runs:
            self.emit(merged(self.session, streams) if len(streams) > 1 else raw[0])

    def drop(self) -> None:
        """The client is gone: forget what waits (the keeper still has it, unacknowledged)."""
        if self.timer is not None:
            self.cancel(self.timer)
            self.timer = None
        self.runs, self.size = [], 0
