"""Unit layer: what the kernel keeper keeps of a kernel's output (keeper/buffer.py) and its wire (wire.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

import pytest
from persistent_notebooks import ipc, wire
from persistent_notebooks.keeper.buffer import OVERHEAD, OutputBuffer
from persistent_notebooks.wire import DELIM, Signer

KEY = b"unit-test-key"


def signature(parts: list[bytes]) -> bytes:
    """What jupyter_client's Session computes by default (HMAC-SHA256 of the four parts, hex)."""
    mac = hmac.new(KEY, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.hexdigest().encode()


def message(msg_type: str, content: dict, cell: str | None = "cell-1") -> list[bytes]:
    parts = [json.dumps({"msg_id": uuid.uuid4().hex, "msg_type": msg_type}).encode(),
             json.dumps({"msg_id": cell, "msg_type": "execute_request"} if cell else {}).encode(), b"{}",
             json.dumps(content).encode()]
    return [b"kernel.iopub", DELIM, signature(parts), *parts]


def line(i: int, cell: str = "cell-1") -> list[bytes]:
    return message("stream", {"name": "stdout", "text": f"line {i}\n"}, cell)


def msg_id(frames: list[bytes]) -> str:
    return wire.split(frames)[0]["msg_id"]


def content(frames: list[bytes]) -> dict:
    _, i = wire.split(frames)
    return json.loads(frames[i + 5])


def assert_signed(frames: list[bytes]) -> None:
    _, i = wire.split(frames)
    assert frames[i + 1] == signature(frames[i + 2:i + 6]), "a message the keeper made is not signed right"


def buffer(limit: int = 1 << 20) -> OutputBuffer:
    return OutputBuffer(Signer(KEY, "hmac-sha256"), limit)


def test_keeps_everything_in_order_until_acknowledged():
    """Output should be kept in order; an ack drops what it covers, and only that."""
    kept = buffer()
    lines = [line(i) for i in range(10)]
    for frames in lines:
        kept.add(frames)
    assert kept.fetch(None) == lines
    kept.ack(msg_id(lines[3]))
    assert kept.fetch(None) == lines[4:]
    assert kept.fetch(msg_id(lines[6])) == lines[7:], "fetch after a message should give what came after it"
    kept.ack(msg_id(lines[9]))
    assert kept.fetch(None) == [] and kept.size == 0


def test_an_ack_before_the_message_arrives_clears_it_then():
    """An ack for a message not received yet should take effect when it comes (and clear what came before)."""
    kept = buffer()
    early, late = line(0), line(1)
    kept.add(early)
    kept.ack(msg_id(late))
    kept.add(late)
    assert kept.fetch(None) == [] and kept.pending_ack is None


def test_drops_the_oldest_past_the_limit_and_says_so_first():
    """Past the limit the oldest output goes, counted, and the next client is told first, in that cell, signed."""
    one = sum(len(f) for f in line(0)) + OVERHEAD
    kept = buffer(limit=one * 5)
    lines = [line(i) for i in range(8)]
    for frames in lines:
        kept.add(frames)
    assert kept.dropped == 3 and kept.size <= kept.limit
    got = kept.fetch(None)
    assert got[1:] == lines[3:], "the newest output should be kept, in order"
    note = got[0]
    assert_signed(note)
    assert "3 earlier output messages" in content(note)["text"] and content(note)["name"] == "stderr"
    _, i = wire.split(note)
    assert json.loads(note[i + 3])["msg_id"] == "cell-1", "the notice should be in the cell of the kept output"
    kept.ack(msg_id(lines[-1]))
    assert kept.dropped == 0, "an ack ends the notice"


def test_a_message_bigger_than_the_buffer_keeps_its_end():
    """One stream message bigger than the whole buffer should keep the end of its text, re-signed, same id."""
    kept = buffer(limit=4096)
    big = message("stream", {"name": "stdout", "text": "".join(f"{i:07d}\n" for i in range(10_000))})
    kept.add(big)
    [frames] = [f for f in kept.fetch(None) if msg_id(f) == msg_id(big)]
    text = content(frames)["text"]
    assert text.endswith("0009999\n") and len(text) <= 2048
    assert_signed(frames)
    assert kept.dropped == 1


def test_a_message_bigger_than_the_buffer_drops_all_older_output():
    """What is kept before an oversized message is older than the part cut from it: it should go too, so
    that the kept output is one unbroken stretch of the newest (found in CI: kept lines, a gap, the rest)."""
    kept = buffer(limit=4096)
    older = [line(i) for i in range(5)]
    for frames in older:
        kept.add(frames)
    big = message("stream", {"name": "stdout", "text": "".join(f"{i:07d}\n" for i in range(10_000))})
    kept.add(big)
    got = kept.fetch(None)
    assert [msg_id(f) for f in got[1:]] == [msg_id(big)], "older output kept beside the newest part of a later one"
    assert "6 earlier output messages" in content(got[0])["text"], content(got[0])["text"]


def test_tracks_busy_and_idle_but_not_from_kernel_info():
    """The execution state (and the cell it is of) should follow status messages, except those of
    requests that do not run code."""
    kept = buffer()
    kept.add(message("status", {"execution_state": "busy"}))
    assert kept.execution_state == "busy"
    info = message("status", {"execution_state": "idle"}, cell=None)
    _, i = wire.split(info)
    info[i + 3] = json.dumps({"msg_id": "x", "msg_type": "kernel_info_request"}).encode()
    kept.add(info)
    assert kept.execution_state == "busy", "a kernel_info reply's idle must not make a busy kernel idle"
    kept.add(message("status", {"execution_state": "idle"}))
    assert kept.execution_state == "idle"
    assert kept.status()["state_of"] == "cell-1", "the state should name the cell it is of"
    kept.add(message("status", {"execution_state": "busy"}, cell="cell-2"))
    assert (kept.execution_state, kept.state_of) == ("busy", "cell-2")


def test_nothing_kept_when_off():
    """NOTEBOOK_AWAY_BUFFER=0 should keep nothing, but still follow the state."""
    kept = buffer(limit=0)
    kept.add(line(0))
    kept.add(message("status", {"execution_state": "busy"}))
    assert kept.fetch(None) == [] and kept.execution_state == "busy"


def test_marks_while_holding_output_and_unmarks_when_delivered():
    """The marker (for a restarted keeper to tell of lost output) should be there exactly while output is held."""
    kept = buffer()
    assert not kept.marked
    first = line(0)
    kept.add(first)
    assert kept.marked and json.loads(kept.marked_parent)["msg_id"] == "cell-1"
    kept.add(line(1, cell="cell-2"))
    assert json.loads(kept.marked_parent)["msg_id"] == "cell-2", "the marker names the newest cell"
    kept.ack(msg_id(kept.fetch(None)[-1]))
    assert not kept.marked


def test_a_restarted_keeper_tells_of_lost_output_once():
    """Output lost with a keeper should be announced once, in its cell, before anything else."""
    kept = buffer()
    kept.lost = (json.dumps({"msg_id": "cell-9"}).encode(), 0.0)
    kept.marked = True
    later = line(1)
    kept.add(later)
    got = kept.fetch(None)
    assert len(got) == 2 and got[1] == later
    assert_signed(got[0])
    assert "is lost" in content(got[0])["text"]
    _, i = wire.split(got[0])
    assert json.loads(got[0][i + 3])["msg_id"] == "cell-9"
    assert kept.fetch(None) == [later], "the loss is told once"


def test_packing_round_trips_and_a_cut_payload_is_refused():
    """Messages should pack and unpack to the same frames; a payload cut short is an error, not garbage."""
    messages = [line(0), [b""], [], message("display_data", {"data": {}}) + [b"\x00" * 1000]]
    packed = wire.pack_messages(messages)
    assert wire.unpack_messages(packed) == messages
    with pytest.raises(ValueError):
        wire.unpack_messages(packed[:-10])


def test_made_messages_are_signed_as_jupyter_signs():
    """A message the keeper makes should carry the signature jupyter_client checks, and a valid header."""
    signer = Signer(KEY, "hmac-sha256")
    frames = signer.stream("hello\n", {"msg_id": "cell-1"})
    assert frames[0] == b"stream.stderr" and frames[1] == DELIM
    assert_signed(frames)
    header = json.loads(frames[3])
    assert header["msg_type"] == "stream" and header["version"] == "5.3" and header["date"]
    assert Signer(b"", "hmac-sha256").stream("x", None)[2] == b"", "no key: no signature, as Jupyter does"


def test_status_request_over_a_socket(tmp_path):
    """request_sync should send a framed request and read a framed reply with its payload."""
    import socket
    import threading

    path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def answer():
        conn, _ = server.accept()
        with conn:
            data = conn.recv(65536)
            request = json.loads(data[4:])
            payload = wire.pack_messages([line(0)])
            conn.sendall(ipc.frame({"id": request["id"], "op": request["op"], "payload": len(payload)}) + payload)
    thread = threading.Thread(target=answer)
    thread.start()
    reply, payload = ipc.request_sync(path, {"op": "status"}, timeout=5)
    thread.join()
    server.close()
    assert reply["op"] == "status" and len(wire.unpack_messages(payload)) == 1
