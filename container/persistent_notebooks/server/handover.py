"""Where the keeper's record of a kernel's output meets a new client's live stream (pure logic, unit-tested).

A client gets the keeper's messages that are older than its first live message, then the live stream. Both are
the kernel's IOPub messages in the kernel's order; the live stream is unbroken from its first message on. The
keeper's record is unbroken too, from where it began: before the client subscribed (`Kept.since`), it holds the
first live message, and what comes before that message in it is older. If the keeper began following the kernel
later (a kernel just started, a keeper just restarted), its first messages may be newer than the live stream's
first: until the two overlap, only the messages the kernel dated before the first live one are known older.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from ..wire import DELIM


def msg_id_of(msg_list: list) -> str | None:
    try:
        i = msg_list.index(DELIM)
        return json.loads(bytes(msg_list[i + 2]))["msg_id"]
    except (ValueError, IndexError, KeyError, TypeError):
        return None


def date_of(msg_list: list) -> datetime | None:
    """The header's date (when the kernel made the message; the protocol's ISO 8601), None if it has none."""
    try:
        i = msg_list.index(DELIM)
        date = datetime.fromisoformat(json.loads(bytes(msg_list[i + 2]))["date"])
    except (ValueError, IndexError, KeyError, TypeError):
        return None
    return date if date.tzinfo else date.replace(tzinfo=UTC)


def before_live(kept: list, live_ids: set, first_live: list | None, since_before: bool) -> tuple[int, bool]:
    """How many of `kept` (the keeper's messages not sent yet, oldest first) go to the client now, ahead of the
    live stream, and whether the keeper's record has met the live stream (the live stream takes over after them).

    live_ids: the msg_ids of the live messages received so far; first_live: the first of them (None: none yet);
    since_before: the keeper's record began before the client subscribed.
    """
    meet = next((i for i, msg in enumerate(kept) if msg_id_of(msg) in live_ids), None)
    if meet is not None:
        return meet, True
    if since_before:
        return len(kept), False
    first = date_of(first_live) if first_live is not None else None
    if first is None:
        return 0, False
    count = 0
    for msg in kept:
        date = date_of(msg)
        if date is None or date >= first:
            break
        count += 1
    return count, False
