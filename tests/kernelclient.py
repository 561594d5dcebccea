"""A small Jupyter client over the server's REST API and kernel websocket, as VSCode uses them.

Each KernelConnection has its own session id, like a VSCode window. Run as a program it is a
separate client process (tests/test_kernel_persistence.py runs two):

  python kernelclient.py BASE_URL TOKEN start CODE     start a kernel, run CODE, print JSON, exit
  python kernelclient.py BASE_URL TOKEN run KID CODE   connect to kernel KID, run CODE, print JSON
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime

import websocket


def across_a_drop(before: list, after: list) -> list:
    """What a client saw before it dropped and what the next one got, as one list.

    At a drop the hand-over is at-least-once: the next client may begin with the last lines the
    one before was sent but is not known to have read. That overlap (a tail of `before` repeated at
    the head of `after`) is counted once; a repeat anywhere else stays in the result.
    """
    overlap = max(k for k in range(min(len(before), len(after)) + 1) if before[len(before) - k:] == after[:k])
    return before + after[overlap:]


def api(base_url: str, token: str, path: str, method: str = "GET", body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base_url}{path}", data=data, method=method,
                                     headers={"Authorization": f"token {token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
        return json.loads(raw) if raw else None


def start_kernel(base_url: str, token: str, name: str = "python3") -> str:
    return api(base_url, token, "/api/kernels", "POST", {"name": name})["id"]


def list_kernels(base_url: str, token: str) -> list[dict]:
    return api(base_url, token, "/api/kernels")


def shutdown_kernel(base_url: str, token: str, kernel_id: str) -> None:
    api(base_url, token, f"/api/kernels/{kernel_id}", "DELETE")


V1 = "v1.kernel.websocket.jupyter.org"  # the binary websocket protocol JupyterLab negotiates


def to_v1(channel: str, parts: list[bytes]) -> bytes:
    """A message in the v1 protocol: offset count, offsets, channel, header, parent, metadata, content."""
    chunks = [channel.encode(), *parts]
    offsets = [8 * (len(chunks) + 2)]
    for chunk in chunks:
        offsets.append(offsets[-1] + len(chunk))
    return b"".join([len(offsets).to_bytes(8, "little"), *(o.to_bytes(8, "little") for o in offsets), *chunks])


def from_v1(data: bytes) -> dict:
    count = int.from_bytes(data[:8], "little")
    offsets = [int.from_bytes(data[8 * (i + 1):8 * (i + 2)], "little") for i in range(count)]
    parts = [data[offsets[i]:offsets[i + 1]] for i in range(count - 1)]
    header, parent, metadata, content = (json.loads(p) for p in parts[1:5])
    return {"channel": parts[0].decode(), "header": header, "parent_header": parent, "metadata": metadata,
            "content": content, "buffers": parts[5:], "msg_type": header["msg_type"]}


class KernelConnection:
    """One websocket to one kernel, with a session id of its own.

    protocol: None for Jupyter's default (JSON text frames, as VSCode's extension uses it), or V1
    for the binary subprotocol that JupyterLab negotiates.
    """

    def __init__(self, base_url: str, token: str, kernel_id: str, timeout: float = 60,
                 session: str | None = None, protocol: str | None = None) -> None:
        self.session = session or uuid.uuid4().hex
        ws_url = base_url.replace("http", "ws", 1)
        self.ws = websocket.create_connection(
            f"{ws_url}/api/kernels/{kernel_id}/channels?session_id={self.session}",
            header=[f"Authorization: token {token}"], timeout=timeout,
            sockopt=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],  # no Nagle delay on small messages
            **({"subprotocols": [protocol]} if protocol else {}),
        )
        if protocol and self.ws.getsubprotocol() != protocol:
            raise ConnectionError(f"the server did not agree to the {protocol} subprotocol")
        self.protocol = protocol
        self.timeout = timeout

    def _encode(self, msg: dict) -> bytes | str:
        if self.protocol == V1:
            parts = [json.dumps(msg[k]).encode() for k in ("header", "parent_header", "metadata", "content")]
            return to_v1(msg["channel"], parts)
        return json.dumps(msg)

    def send(self, msg: dict) -> None:
        data = self._encode(msg)
        if isinstance(data, bytes):
            self.ws.send_binary(data)
        else:
            self.ws.send(data)

    def recv(self) -> dict:
        data = self.ws.recv()
        return from_v1(data) if self.protocol == V1 else json.loads(data)

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> KernelConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def drain(self, seconds: float) -> None:
        """Read (and drop) whatever comes for `seconds`, as a connected editor does between cells: a
        client that reads answers the server's pings, which tells it what the client has read."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.ws.settimeout(left)
            try:
                self.ws.recv()
            except websocket.WebSocketTimeoutException:
                break

    def execute_request(self, code: str, cell_uri: str | None = None) -> dict:
        """An execute_request, as an editor runs a cell. With cell_uri, its metadata names the cell as VSCode's
        does (cellExecution.ts: metadata.cellId, the cell's URI) or JupyterLab's (the cell's id)."""
        return {
            "header": {"msg_id": uuid.uuid4().hex, "username": "kernelclient", "session": self.session,
                       "msg_type": "execute_request", "version": "5.3",
                       "date": datetime.now(UTC).isoformat()},
            "parent_header": {}, "metadata": {"cellId": cell_uri} if cell_uri else {}, "channel": "shell",
            "buffers": [], "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }

    def submit(self, code: str, cell_uri: str | None = None) -> str:
        """Send an execute_request (execute_request()); return its msg_id."""
        msg = self.execute_request(code, cell_uri)
        self.send(msg)
        return msg["header"]["msg_id"]

    def submit_and_leave(self, cells: list[tuple[str, str | None]]) -> list[str]:
        """Send execute requests for (code, cell_uri) and the websocket's close in one write, as a window closed
        right after Run All sends them (the server reads them all at once), and leave; return their msg_ids."""
        msgs = [self.execute_request(code, uri) for code, uri in cells]
        opcode = websocket.ABNF.OPCODE_BINARY if self.protocol == V1 else websocket.ABNF.OPCODE_TEXT
        frames = [websocket.ABNF.create_frame(self._encode(msg), opcode) for msg in msgs]
        frames.append(websocket.ABNF.create_frame(websocket.STATUS_NORMAL.to_bytes(2, "big"),
                                                  websocket.ABNF.OPCODE_CLOSE))
        self.ws.sock.sendall(b"".join(frame.format() for frame in frames))
        self.ws.settimeout(10)
        with contextlib.suppress(websocket.WebSocketException, OSError):  # read to the server's close, as a page does
            while self.ws.recv_data_frame(control_frame=True)[0] != websocket.ABNF.OPCODE_CLOSE:
                pass
        self.ws.shutdown()
        return [msg["header"]["msg_id"] for msg in msgs]

    def follow(self, msg_id: str, seconds: float | None = None) -> dict:
        """Collect the IOPub output of cell msg_id, as VSCode follows its last cell after a reload.

        Until the cell's idle status (seconds=None; TimeoutError after self.timeout), or for the
        given seconds, or until the server closes the connection. Returns {"stdout", "messages",
        "idle", "closed"}: the text, the messages in order, whether idle came, whether it closed.
        """
        out = {"stdout": "", "messages": [], "idle": False, "closed": False}
        deadline = time.monotonic() + (seconds if seconds is not None else self.timeout)
        while not out["idle"]:
            left = deadline - time.monotonic()
            if left <= 0:
                if seconds is None:
                    raise TimeoutError(f"cell {msg_id} did not finish within {self.timeout} s: "
                                       f"{out['stdout'][-300:]!r}")
                break
            # Short reads: a websocket ping inside one long recv() would restart its timeout.
            self.ws.settimeout(min(left, 1.0))
            try:
                msg = self.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
                out["closed"] = True
                break
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            out["messages"].append(msg)
            if msg["msg_type"] == "stream":
                out["stdout"] += msg["content"]["text"]
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                out["idle"] = True
        return out

    def execute(self, code: str, cell_uri: str | None = None) -> dict:
        """Run code; return {"stdout": ..., "stderr": ..., "result": ..., "error": ...} once the kernel is idle."""
        msg_id = self.submit(code, cell_uri)
        self.ws.settimeout(1.0)  # short reads, so the deadline below is kept (pings restart a read)
        out = {"stdout": "", "stderr": "", "result": None, "error": None}
        replied = idle = False
        deadline = time.monotonic() + self.timeout
        while not (replied and idle):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply to {code!r} within {self.timeout} s")
            try:
                msg = self.recv()
            except websocket.WebSocketTimeoutException:
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out[content.get("name") if content.get("name") == "stderr" else "stdout"] += content["text"]
            elif kind == "execute_result":
                out["result"] = content["data"].get("text/plain")
            elif kind == "error":
                out["error"] = f"{content['ename']}: {content['evalue']}"
            elif kind == "execute_reply":
                replied = True
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
        return out


def main(argv: list[str]) -> int:
    base_url, token, action, *rest = argv
    if action == "start":
        kernel_id, code = start_kernel(base_url, token), rest[0]
    elif action == "run":
        kernel_id, code = rest
    else:
        print(__doc__, file=sys.stderr)
        return 2
    with KernelConnection(base_url, token, kernel_id) as connection:
        result = connection.execute(code)
        result["session"] = connection.session
    # Exit without shutting the kernel down, as VSCode does when it is closed.
    print(json.dumps({"kernel_id": kernel_id, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
