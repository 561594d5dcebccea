"""Unit layer: where the keeper's record meets a new client's live stream (server/handover.py), no Docker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from persistent_notebooks.keeper.buffer import OutputBuffer
from persistent_notebooks.server.handover import Message, before_live
from persistent_notebooks.wire import DELIM, Signer

START = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)


def line(i: int, date: str | None = "") -> Message:
    """The kernel's i-th stdout line, dated as ipykernel dates its messages (a line every 100 ms)."""
    header = {"msg_id": f"kernel_1_{i}", "msg_type": "stream", "username": "notebook"}
    if date is not None:
        header["date"] = date or (START + timedelta(milliseconds=100 * i)).isoformat().replace("+00:00", "Z")
    parts = [json.dumps(header).encode(), json.dumps({"msg_id": "cell"}).encode(), b"{}",
             json.dumps({"name": "stdout", "text": f"{i}\n"}).encode()]
    return Message.read([b"kernel.iopub", DELIM, b"", *parts])


def ids(messages: list[Message]) -> set:
    return {m.msg_id for m in messages}


def test_a_record_begun_before_the_client_goes_first_up_to_the_live_stream():
    """The keeper followed the kernel before the client subscribed: what it holds ahead of the first live message
    goes first, all of it, as it comes."""
    live = [line(i) for i in range(5, 13)]
    assert before_live([line(i) for i in range(10)], ids(live), live[0].date, since_before=True) == (5, True)
    assert before_live([line(i) for i in range(3)], ids(live), live[0].date, since_before=True) == (3, False), \
        "a keeper behind the live stream should send what it has so far"


def test_a_record_begun_inside_the_live_stream_sends_nothing_newer_than_it():
    """The keeper joined the kernel's output after the client subscribed, and its first messages reached the server
    before the client's live stream did (the CI failure: line 28 sent ahead of lines 19-27)."""
    kept = [line(i) for i in range(28, 36)]
    live = [line(i) for i in range(19, 28)]
    assert before_live(kept, ids(live), live[0].date, since_before=False) == (0, False), \
        "the keeper's messages are newer than the first live one: none of them should go ahead of it"
    live += [line(i) for i in range(28, 31)]
    assert before_live(kept, ids(live), live[0].date, since_before=False) == (0, True)


def test_a_record_begun_later_still_sends_what_is_known_older():
    """The keeper's own notice, and what the kernel made clearly before the first live message (by its header's
    date), are older, overlap or not; a message without a date, or dated within MARGIN of the first live one, waits
    for the overlap."""
    live = [line(i) for i in range(10, 14)]
    notice = Message.read(Signer(b"key").stream("[persistent-notebooks: output lost]\n", None))
    kept = [notice, line(6), line(7), line(8, date=None), line(9)]
    assert before_live(kept, ids(live), live[0].date, since_before=False) == (3, False)
    assert before_live(kept[4:], ids(live), live[0].date, since_before=False) == (1, False)
    almost = line(9, date=(live[0].date - timedelta(milliseconds=10)).isoformat())
    assert before_live([almost], ids(live), live[0].date, since_before=False) == (0, False)
    assert before_live(kept[1:], ids(live), None, since_before=False) == (0, False), "no live message: no date"


def test_dates_as_kernels_write_them():
    """ipykernel's 'Z', an explicit offset and a date without a zone (taken as UTC) compare alike; what cannot be
    read has no date (and no id)."""
    assert line(0, "2026-12-04T18:00:00.000001Z").date == START + timedelta(microseconds=1)
    assert line(0, "2026-12-04T19:00:00+01:00").date == START
    assert line(0, "2026-12-04T18:00:00").date == START
    assert line(0, "yesterday").date is None
    assert Message.read([b"no delimiter"]) == ([b"no delimiter"], None, None, False)
    assert Message.read([DELIM, b"", b"[1]"]).msg_id is None


def test_the_keeper_says_since_when_its_record_runs():
    """`since` is when the first message reached the keeper, and stays so."""
    kept = OutputBuffer(Signer(b"key"), 1 << 20)
    assert kept.since is None
    kept.add(line(0).frames)
    since = kept.since
    kept.add(line(1).frames)
    assert since is not None and kept.since == since and kept.status()["since"] == since
