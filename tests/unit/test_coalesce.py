"""Unit layer: stream output coalescing (container/persistent_notebooks/server/coalesce.py), no Docker."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

from persistent_notebooks.server import coalesce

KEY = b"unit-test-key"


class Signer:
    """Signs as jupyter_client's Session does by default (HMAC-SHA256 over the four parts, hex)."""

    def sign(self, parts: list[bytes]) -> bytes:
        mac = hmac.new(KEY, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(part)
        return mac.hexdigest().encode()


def message(msg_type: str, content: dict, cell: str = "cell-1", buffers: tuple = ()) -> list[bytes]:
    parts = [json.dumps({"msg_id": uuid.uuid4().hex, "msg_type": msg_type}).encode(),
             json.dumps({"msg_id": cell}).encode(), b"{}", json.dumps(content).encode()]
    return [b"kernel.iopub", coalesce.DELIM, Signer().sign(parts), *parts, *buffers]


def stream(text: str, name: str = "stdout", cell: str = "cell-1") -> list[bytes]:
    return message("stream", {"name": name, "text": text}, cell)


def decoded(msg_list: list) -> tuple[str, dict]:
    i = msg_list.index(coalesce.DELIM)
    parts = [bytes(p) for p in msg_list[i + 2:i + 6]]
    assert bytes(msg_list[i + 1]) == Signer().sign(parts), "a merged message must be signed with the session's key"
    return json.loads(parts[0])["msg_type"], json.loads(parts[3])


def msg_id(msg_list: list) -> str:
    return json.loads(msg_list[msg_list.index(coalesce.DELIM) + 2])["msg_id"]


def test_only_plain_stream_text_is_coalesced():
    """stream_of should take stream messages and leave results, statuses and messages with buffers alone."""
    assert coalesce.stream_of(stream("a\n")).key == ("cell-1", "stdout")
    assert coalesce.stream_of(message("status", {"execution_state": "idle"})) is None
    assert coalesce.stream_of(message("stream", {"name": "stdout", "text": "x"}, buffers=(b"raw",))) is None
    assert coalesce.stream_of(message("stream", {"name": "stdout", "text": "x", "extra": 1})) is None
    assert coalesce.stream_of([b"garbage"]) is None


def test_kept_output_merges_runs_of_one_cell_and_stream():
    """coalesce should merge consecutive same-cell same-stream messages, in order, and say what each covers."""
    messages = [stream("0\n"), stream("1\n"), stream("e\n", "stderr"), stream("2\n"), stream("3\n", cell="cell-2"),
                message("status", {"execution_state": "idle"}, "cell-2"), stream("4\n", cell="cell-2")]
    out = coalesce.coalesce(Signer(), messages)
    assert [decoded(m)[1].get("text") for m, _ in out] == ["0\n1\n", "e\n", "2\n", "3\n", None, "4\n"]
    assert [len(covered) for _, covered in out] == [2, 1, 1, 1, 1, 1]
    assert msg_id(out[0][0]) == msg_id(messages[1]), "a merged message should carry the newest msg_id it covers"
    assert out[1][0] is messages[2], "a message merged with nothing should go out as it came"


def test_kept_output_splits_past_max_text(monkeypatch):
    """No merged message should grow past MAX_TEXT characters."""
    monkeypatch.setattr(coalesce, "MAX_TEXT", 10)
    out = coalesce.coalesce(Signer(), [stream("abcd"), stream("efgh"), stream("ijkl")])
    assert [decoded(m)[1]["text"] for m, _ in out] == ["abcdefgh", "ijkl"]


class Loop:
    """A clock and timers that the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[list] = []

    def call_later(self, delay, callback):
        timer = [self.now + delay, callback]
        self.timers.append(timer)
        return timer

    def cancel(self, timer) -> None:
        self.timers.remove(timer)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for timer in [t for t in self.timers if t[0] <= self.now]:
            self.timers.remove(timer)
            timer[1]()


def live() -> tuple[coalesce.Coalescer, Loop, list]:
    loop, sent = Loop(), []
    return coalesce.Coalescer(Signer(), sent.append, lambda: loop.now, loop.call_later, loop.cancel), loop, sent


def test_live_output_goes_at_once_then_at_most_every_interval():
    """A first line should go out at once; a burst after it as one message INTERVAL later, every character kept."""
    coalescer, loop, sent = live()
    coalescer.push(stream("0\n"))
    assert len(sent) == 1, "a line after a quiet spell should not wait"
    for i in range(1, 1000):
        coalescer.push(stream(f"{i}\n"))
    assert len(sent) == 1, "a burst should wait for the interval"
    loop.advance(coalesce.INTERVAL)
    assert len(sent) == 2 and decoded(sent[1])[1]["text"] == "".join(f"{i}\n" for i in range(1, 1000))


def test_anything_else_sends_what_waits_first():
    """An idle status (or a result) should send the waiting stream text before it, so order is kept."""
    coalescer, loop, sent = live()
    coalescer.push(stream("0\n"))
    coalescer.push(stream("1\n"))
    coalescer.push(stream("x\n", "stderr"))
    coalescer.push(message("status", {"execution_state": "idle"}))
    assert [decoded(m)[0] for m in sent] == ["stream", "stream", "stream", "status"]
    assert [decoded(m)[1].get("text") for m in sent[:3]] == ["0\n", "1\n", "x\n"]
    assert not loop.timers, "nothing should be left waiting"


def test_a_dropped_client_forgets_what_waits():
    """drop() should send nothing more (the keeper still has it, not acknowledged)."""
    coalescer, loop, sent = live()
    coalescer.push(stream("0\n"))
    coalescer.push(stream("1\n"))
    coalescer.drop()
    loop.advance(1)
    assert len(sent) == 1


def test_stdout_and_stderr_alternating_line_by_line_stay_whole_and_few():
    """10,000 lines alternating stdout and stderr, flushed one by one, faster than the interval: every character
    of each stream in its order, in a bounded number of messages (Jupyter's rate limit drops past 1,000 a
    second), the last one sent carrying the newest msg_id (what the keeper is acknowledged)."""
    coalescer, loop, sent = live()
    pushed = []
    for i in range(10_000):
        pushed.append(stream(f"{i}\n", "stderr" if i % 2 else "stdout"))
        coalescer.push(pushed[-1])
        loop.advance(0.0001)  # a line every 0.1 ms: 10,000 a second
    coalescer.push(message("status", {"execution_state": "idle"}))
    texts = {"stdout": "", "stderr": ""}
    for m in sent[:-1]:
        kind, content = decoded(m)
        texts[content["name"]] += content["text"]
    assert texts["stdout"] == "".join(f"{i}\n" for i in range(0, 10_000, 2))
    assert texts["stderr"] == "".join(f"{i}\n" for i in range(1, 10_000, 2))
    seconds = 10_000 * 0.0001
    assert len(sent) <= 3 + seconds / coalesce.INTERVAL * (coalesce.MAX_RUNS + 1), f"{len(sent)} messages"
    assert msg_id(sent[-2]) == msg_id(pushed[-1]), "the newest message should be acknowledged last"
