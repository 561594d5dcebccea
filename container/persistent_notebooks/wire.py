"""The kernel keeper's requests, and the Jupyter messages it makes (stdlib only).

On the keeper's unix socket (run/keeper.sock, private; framed as ipc.py says) the requests are
`{"op": "ack"|"fetch"|"watch"|"forget"|"status"|"ping", "kernel_id": ..., "id": N}` ("ping": a kernel is about to
be launched, stay); a `fetch` reply's payload is messages packed as a frame count, then each frame as a length and
its bytes, and its `since` says since when the keeper's record of the kernel has no gap (`Kept`).

Messages the keeper makes itself (a notice in a cell, a trimmed stream message) are signed with the
kernel's key as the Jupyter messaging protocol (5.3) says, so that the server's session accepts them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

DELIM = b"<IDS|MSG>"
KEEPER_USERNAME = "persistent-notebooks"  # the header's username of the messages the keeper makes itself
PROTOCOL_VERSION = "5.3"
_LENGTH = struct.Struct("!I")


# --- the keeper's payloads ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Kept:
    """A `fetch` reply: the kernel's messages the keeper holds, oldest first."""

    messages: list[list[bytes]]
    # time.time() when the keeper received its first message of the kernel (None: none yet); it holds every
    # message published since, but for what clients have read (acknowledged) and what NOTEBOOK_AWAY_BUFFER dropped.
    since: float | None = None


def pack_messages(messages: list[list[bytes]]) -> bytes:
    out = []
    for frames in messages:
        out.append(_LENGTH.pack(len(frames)))
        for part in frames:
            out.append(_LENGTH.pack(len(part)))
            out.append(part)
    return b"".join(out)


def unpack_messages(payload: bytes) -> list[list[bytes]]:
    """The inverse of pack_messages; ValueError on a payload that is cut short."""
    view, pos, messages = memoryview(payload), 0, []
    try:
        while pos < len(view):
            (count,) = _LENGTH.unpack_from(view, pos)
            pos += 4
            frames = []
            for _ in range(count):
                (size,) = _LENGTH.unpack_from(view, pos)
                pos += 4
                if pos + size > len(view):
                    raise ValueError("payload cut short")
                frames.append(bytes(view[pos:pos + size]))
                pos += size
            messages.append(frames)
    except struct.error as exc:
        raise ValueError(f"payload cut short: {exc}") from None
    return messages


# --- Jupyter messages -------------------------------------------------------------------------------

def split(frames: list[bytes]) -> tuple[dict, int]:
    """The header of a raw Jupyter message (its routing frames first) and the index of its delimiter."""
    i = frames.index(DELIM)
    return json.loads(bytes(frames[i + 2])), i


class Signer:
    """Signs Jupyter messages with a kernel's key (the connection file's `key` and `signature_scheme`)."""

    def __init__(self, key: bytes, scheme: str = "hmac-sha256", username: str = KEEPER_USERNAME) -> None:
        algorithm = scheme.split("-", 1)[1] if scheme.startswith("hmac-") else scheme
        self.key, self.digest = key, getattr(hashlib, algorithm)
        self.username, self.session = username, uuid.uuid4().hex

    def sign(self, parts: list[bytes]) -> bytes:
        """The signature of header, parent header, metadata and content (b"" when there is no key)."""
        if not self.key:
            return b""
        mac = hmac.new(self.key, digestmod=self.digest)
        for part in parts:
            mac.update(part)
        return mac.hexdigest().encode()

    def message(self, msg_type: str, content: dict, parent: dict | None = None, topic: bytes = b"") -> list[bytes]:
        """A whole message as frames: [topic,] DELIM, signature, header, parent, metadata, content."""
        header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "username": self.username,
                  "session": self.session, "date": datetime.now(UTC).isoformat(), "version": PROTOCOL_VERSION}
        parts = [json.dumps(part).encode() for part in (header, parent or {}, {}, content)]
        return [*([topic] if topic else []), DELIM, self.sign(parts), *parts]

    def stream(self, text: str, parent: dict | None, name: str = "stderr") -> list[bytes]:
        """A stream message (text in a cell's output), on IOPub's stream.NAME topic."""
        return self.message("stream", {"name": name, "text": text}, parent, topic=f"stream.{name}".encode())

    def with_content(self, frames: list[bytes], i: int, content: dict) -> list[bytes]:
        """The message `frames` (delimiter at `i`) with a new content, signed again under the same id."""
        new_content = json.dumps(content).encode()
        signature = self.sign([frames[i + 2], frames[i + 3], frames[i + 4], new_content])
        return [*frames[:i + 1], signature, frames[i + 2], frames[i + 3], frames[i + 4], new_content, *frames[i + 6:]]
