"""A small Jupyter client over the server's REST API and kernel websocket, as VSCode uses them.

Each KernelConnection has its own session id, like a VSCode window. Run as a program it is a
separate client process (tests/test_kernel_persistence.py runs two):

  python kernelclient.py BASE_URL TOKEN start CODE     start a kernel, run CODE, print JSON, exit
  python kernelclient.py BASE_URL TOKEN run KID CODE   connect to kernel KID, run CODE, print JSON
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime

import websocket


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


class KernelConnection:
    """One websocket to one kernel, with a session id of its own."""

    def __init__(self, base_url: str, token: str, kernel_id: str, timeout: float = 60,
                 session: str | None = None) -> None:
        self.session = session or uuid.uuid4().hex
        ws_url = base_url.replace("http", "ws", 1)
        self.ws = websocket.create_connection(
            f"{ws_url}/api/kernels/{kernel_id}/channels?session_id={self.session}",
            header=[f"Authorization: token {token}"], timeout=timeout,
            sockopt=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],  # no Nagle delay on small messages
        )
        self.timeout = timeout

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> KernelConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(self, code: str) -> str:
        """Send an execute_request, as an editor runs a cell; return its msg_id."""
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "kernelclient", "session": self.session,
                       "msg_type": "execute_request", "version": "5.3",
                       "date": datetime.now(UTC).isoformat()},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }))
        return msg_id

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
                msg = json.loads(self.ws.recv())
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

    def execute(self, code: str) -> dict:
        """Run code; return {"stdout": ..., "result": ..., "error": ...} once the kernel is idle."""
        msg_id = self.submit(code)
        self.ws.settimeout(1.0)  # short reads, so the deadline below is kept (pings restart a read)
        out = {"stdout": "", "result": None, "error": None}
        replied = idle = False
        deadline = time.monotonic() + self.timeout
        while not (replied and idle):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply to {code!r} within {self.timeout} s")
            try:
                msg = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content.get("name") == "stdout":
                out["stdout"] += content["text"]
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
