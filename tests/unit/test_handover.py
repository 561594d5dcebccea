"""Unit layer: where the keeper's record meets a new client's live stream (server/handover.py), no Docker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from persistent_notebooks.keeper.buffer import OutputBuffer
from persistent_notebooks.server.handover import before_live, date_of, msg_id_of
from persistent_notebooks.wire import DELIM, Signer

START = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)


def line(i: int, date: str | None = "") -> list[bytes]:
    """The kernel's i-th stdout line, dated as ipykernel dates its messages (a line every 50 ms)."""
    header = {"msg_id": f"kernel_1_{i}", "msg_type": "stream"}
    if date is not None:
        header["date"] = date or (START + timedelta(milliseconds=50 * i)).isoformat().replace("+00:00", "Z")
    parts = [json.dumps(header).encode(), json.dumps({"msg_id": "cell"}).encode(), b"{}",
             json.dumps({"name": "stdout", "text": f"{i}\n"}).encode()]
    return [b"kernel.iopub", DELIM, b"", *parts]


def ids(messages: list) -> set:
    return {msg_id_of(m) for m in messages}


def test_a_record_begun_before_the_client_goes_first_up_to_the_live_stream():
    """The keeper followed the kernel before the client subscribed: what it holds ahead of the first live message
    goes first, all of it, as it comes."""
    live = [line(i) for i in range(5, 13)]
    assert before_live([line(i) for i in range(10)], ids(live), live[0], since_before=True) == (5, True)
    assert before_live([line(i) for i in range(3)], ids(live), live[0], since_before=True) == (3, False), \
        "a keeper behind the live stream should send what it has so far"


def test_a_record_begun_inside_the_live_stream_sends_nothing_newer_than_it():
    """The keeper joined the kernel's output after the client subscribed, and its first messages reached the server
    before the client's live stream did (the CI failure: line 28 sent ahead of lines 19-27)."""
    kept = [line(i) for i in range(28, 36)]
    live = [line(i) for i in range(19, 28)]
    assert before_live(kept, ids(live), live[0], since_before=False) == (0, False), \
        "the keeper's messages are newer than the first live one: none of them should go ahead of it"
    live += [line(i) for i in range(28, 31)]
    assert before_live(kept, ids(live), live[0], since_before=False) == (0, True)


def test_a_record_begun_later_still_sends_what_the_kernel_dated_before_the_first_live_message():
    """What the kernel made before the first live message (by its header's date) is older, overlap or not; a message
    without a date is not known older and waits for the overlap."""
    live = [line(i) for i in range(10, 14)]
    kept = [line(6), line(7), line(8, date=None), line(9)]
    assert before_live(kept, ids(live), live[0], since_before=False) == (2, False)
    assert before_live(kept[3:], ids(live), live[0], since_before=False) == (1, False)
    assert before_live(kept, ids(live), None, since_before=False) == (0, False), "no live message: nothing is known"


def test_dates_as_kernels_write_them():
    """ipykernel's 'Z', an explicit offset and a date without a zone (taken as UTC) compare alike."""
    assert date_of(line(0, "2026-12-04T18:00:00.000001Z")) == START + timedelta(microseconds=1)
    assert date_of(line(0, "2026-12-04T19:00:00+01:00")) == START
    assert date_of(line(0, "2026-12-04T18:00:00")) == START
    assert date_of(line(0, "yesterday")) is None and date_of([b"no delimiter"]) is None


def test_the_keeper_says_since_when_its_record_runs():
    """`since` is when the first message reached the keeper, and stays so."""
    kept = OutputBuffer(Signer(b"key"), 1 << 20)
    assert kept.since is None
    kept.add(line(0))
    since = kept.since
    kept.add(line(1))
    assert since is not None and kept.since == since and kept.status()["since"] == since
