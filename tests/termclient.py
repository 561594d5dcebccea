"""A JupyterLab terminal as the page speaks to it: POST /api/terminals, then terminado's websocket
(["stdin", text] out, ["stdout", text] in)."""

from __future__ import annotations

import json
import re
import time

import requests
import websocket


def new_terminal(base_url: str, token: str, name: str | None = None) -> str:
    """POST /api/terminals (with the name, as JupyterLab restores a terminal); the terminal's name."""
    answer = requests.post(f"{base_url}/api/terminals", json={"name": name} if name else {}, timeout=30,
                           headers={"Authorization": f"token {token}"})
    assert answer.status_code == 200, f"no terminal: {answer.status_code} {answer.text}"
    return answer.json()["name"]


def terminal_names(base_url: str, token: str) -> list[str]:
    answer = requests.get(f"{base_url}/api/terminals", headers={"Authorization": f"token {token}"}, timeout=30)
    return [t["name"] for t in answer.json()]


class TerminalConnection:
    """One browser tab's websocket to terminal NAME; `screen` is everything it printed so far."""

    def __init__(self, base_url: str, token: str, name: str, timeout: float = 30):
        self.ws = websocket.create_connection(f"{base_url.replace('http', 'ws', 1)}/terminals/websocket/{name}",
                                              header=[f"Authorization: token {token}"], timeout=timeout)
        self.ws.send(json.dumps(["set_size", 40, 160, 800, 1600]))
        self.screen, self.closed = "", False

    def type(self, text: str) -> None:
        self.ws.send(json.dumps(["stdin", text]))

    def expect(self, pattern: str, timeout: float = 30) -> re.Match | None:
        """Read until the screen matches PATTERN (a regular expression); None if the terminal closed first."""
        deadline = time.monotonic() + timeout
        while not (found := re.search(pattern, self.screen)) and not self.closed:
            if time.monotonic() > deadline:
                raise AssertionError(f"the terminal did not print {pattern!r} within {timeout} s: "
                                     f"{self.screen[-500:]!r}")
            self.ws.settimeout(max(0.1, min(1.0, deadline - time.monotonic())))
            try:
                message = json.loads(self.ws.recv() or "[]")
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketConnectionClosedException, ConnectionError):
                self.closed = True
                break
            if message and message[0] == "stdout":
                self.screen += message[1]
            elif message and message[0] == "disconnect":
                self.closed = True
        return found

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> TerminalConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
