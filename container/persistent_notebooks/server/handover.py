"""Where the keeper's record of a kernel's output meets a new client's live stream (pure logic, unit-tested).

A client gets the keeper's messages that are older than its first live message, then the live stream. Both are
the kernel's IOPub messages in the kernel's order; the live stream is unbroken from its first message on. The
keeper's record is unbroken too, from where it began: begun before the client subscribed (`Kept.since`), it holds
the first live message, and what comes before that message in it is older. If the keeper began following the
kernel later (a kernel just started or restarted, a keeper just restarted), its first messages may be newer than
the live stream's first: until the two overlap, only what is known older goes ahead: the keeper's own notices
(about what came before), and what the kernel dated clearly before the first live message (MARGIN: a kernel dates a
message when it makes it, and its threads may send them a little out of that order).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from ..wire import KEEPER_USERNAME, split

MARGIN = timedelta(milliseconds=50)


def header_of(frames: list) -> dict | None:
    """The header of a raw message (routing frames first, frames as bytes or buffers); None when unreadable."""
    try:
        header, _ = split(frames)
    except (ValueError, IndexError, TypeError):
        return None
    return header if isinstance(header, dict) else None


def msg_id_in(header: dict) -> str | None:
    msg_id = header.get("msg_id")
    return msg_id if isinstance(msg_id, str) else None


def msg_id_of(frames: list) -> str | None:
    """A raw message's msg_id; None when it has none or cannot be read."""
    return msg_id_in(header_of(frames) or {})


class Message(NamedTuple):
    """A raw IOPub message, its header read once."""

    frames: list
    msg_id: str | None
    date: datetime | None  # when the kernel made it (the protocol's ISO 8601 header date); None: none or unreadable
    notice: bool  # made by the keeper (a notice of output dropped or lost before it)

    @classmethod
    def read(cls, frames: list) -> Message:
        header = header_of(frames)
        if header is None:
            return cls(frames, None, None, False)
        try:
            date = datetime.fromisoformat(header["date"])
            date = date if date.tzinfo else date.replace(tzinfo=UTC)
        except (KeyError, TypeError, ValueError):
            date = None
        return cls(frames, msg_id_in(header), date, header.get("username") == KEEPER_USERNAME)


def known_older(message: Message, first_live: datetime | None) -> bool:
    """Whether a kept message is known to come before the live stream without the two overlapping."""
    if message.notice:
        return True
    return message.date is not None and first_live is not None and message.date <= first_live - MARGIN


def before_live(kept: list[Message], live_ids: set, first_live: datetime | None,
                since_before: bool) -> tuple[int, bool]:
    """How many of `kept` (the keeper's messages not sent yet, oldest first) go to the client now, ahead of the
    live stream, and whether the keeper's record has met the live stream (the live stream takes over after them).

    live_ids: the msg_ids of the live messages received so far; first_live: the date of the first of them;
    since_before: the keeper's record began before the client subscribed.
    """
    meet = next((i for i, message in enumerate(kept) if message.msg_id in live_ids), None)
    if meet is not None:
        return meet, True
    if since_before:
        return len(kept), False
    count = 0
    while count < len(kept) and known_older(kept[count], first_live):
        count += 1
    return count, False
