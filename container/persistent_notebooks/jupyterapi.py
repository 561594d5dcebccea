"""The running Jupyter server's REST API, for programs beside it (the CLI, the notebook runner).

It is reached on 127.0.0.1 with the token the server runs with (run/token, private).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from . import paths, settings


class ApiError(Exception):
    """Jupyter cannot be reached or answered an error; the message says which, and what to look at."""


class Unreachable(ApiError):
    """Jupyter does not answer at all (not started yet, restarting, or hung)."""


def api(method: str, path: str, body: dict | None = None, timeout: float = 10) -> object:
    """One request; the decoded JSON answer (None for an empty one, or a DELETE of what is gone)."""
    port = settings.port()
    try:
        token = paths.SERVER_TOKEN_FILE.read_text().strip()
    except OSError as exc:
        raise ApiError(f"cannot read the server's token ({exc}); is the stack running?") from None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{settings.base_url().rstrip('/')}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"token {token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and method == "DELETE":
            return None
        try:
            detail = json.loads(exc.read() or b"{}").get("message") or ""
        except (ValueError, AttributeError, OSError):
            detail = ""
        raise ApiError(f"Jupyter answered {exc.code} to {method} {path}" + (f": {detail}" if detail else "")) from None
    except OSError as exc:
        raise Unreachable(f"Jupyter does not answer on port {port} ({exc}); see scripts/status") from None
    return json.loads(answer) if answer else None
