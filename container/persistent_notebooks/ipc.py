"""Requests between this stack's processes on private unix sockets (the kernel keeper's, the notebook runner's).

One framing: each frame a 4-byte big-endian length and a JSON object. A request with an `id` gets a reply with the
same `id`, which may announce `payload` bytes that follow it; one without an `id` gets none. One sync client (the
CLI, the watchdog), one async client (the Jupyter server) and `Service`, the base of the programs that answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import struct
import time
from pathlib import Path

_LENGTH = struct.Struct("!I")


def frame(obj: dict) -> bytes:
    data = json.dumps(obj).encode()
    return _LENGTH.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> dict:
    """The next frame from an asyncio stream; IncompleteReadError at its end."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return json.loads(await reader.readexactly(length))


async def read_reply(reader: asyncio.StreamReader) -> tuple[dict, bytes]:
    """A reply and the payload it announces."""
    reply = await read_frame(reader)
    return reply, await reader.readexactly(int(reply.get("payload", 0)))


def request_sync(path: Path | str, request: dict, timeout: float) -> tuple[dict, bytes]:
    """One request, without an event loop: (reply, payload). OSError (a TimeoutError after `timeout`) or
    ConnectionError when the service is not there or does not answer; ValueError for a reply that is not JSON."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(frame({"id": 1, **request}))
        data = b""

        def need(size: int) -> None:
            nonlocal data
            while len(data) < size:
                chunk = sock.recv(max(65536, size - len(data)))
                if not chunk:
                    raise ConnectionError("the connection was closed before the reply")
                data += chunk
        need(4)
        (length,) = _LENGTH.unpack_from(data)
        need(4 + length)
        reply = json.loads(data[4:4 + length])
        size = int(reply.get("payload", 0))
        need(4 + length + size)
        return reply, data[4 + length:4 + length + size]


async def request(path: Path | str, message: dict, timeout: float) -> tuple[dict, bytes]:
    """One request on a connection of its own, in an event loop: (reply, payload); errors as request_sync's."""
    async def ask() -> tuple[dict, bytes]:
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(frame({"id": 1, **message}))
            await writer.drain()
            return await read_reply(reader)
        except asyncio.IncompleteReadError:
            raise ConnectionError("the connection was closed before the reply") from None
        finally:
            writer.close()
    return await asyncio.wait_for(ask(), timeout)


class Service:
    """A program supervisord starts on demand: answers requests on its private socket, ends when idle or stopped.

    `run()` (called by the program's main) serves the socket, then once a second calls `tick()`; it exits when
    `busy()` has been false and no request but the watchdog's probes came for `idle_exit` seconds (the socket
    goes first, then a last look at `busy()`: a client that comes after finds no socket and starts the program
    again), or, on SIGTERM or SIGINT, calls `stop_requested()`, closes the socket and awaits `stopped()`.
    """

    socket_path: Path
    idle_exit: float
    idle_note: str  # logged at an idle exit, with idle_exit
    log_name: str  # the program's logger
    probes: frozenset[str] = frozenset()  # the watchdog's requests: no work, so no reason to stay

    def __init__(self) -> None:
        self.last_request = time.monotonic()
        self.stopping = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None

    # --- for subclasses -------------------------------------------------------------------------------

    async def answer(self, request: dict) -> tuple[dict, bytes | None]:
        """Called for each request: the reply (sent only if the request has an id) and its payload, or None."""
        raise NotImplementedError

    def busy(self) -> bool:
        """Called once a second: work is left (no idle exit)."""
        return False

    async def started(self) -> None:
        """Called once the socket answers (e.g. to pick up work an earlier instance left)."""

    async def tick(self) -> None:
        """Called once a second while the service runs."""

    def stop_requested(self) -> None:
        """Called by SIGTERM or SIGINT (the container stops), before the socket closes."""

    async def stopped(self) -> None:
        """Called after the socket has closed at a stop (not at an idle exit)."""

    # --- the service ------------------------------------------------------------------------------------

    async def listen(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.socket_path))
        os.chmod(self.socket_path, 0o600)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self.socket_path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                message = await read_frame(reader)
                if not isinstance(message, dict):
                    break  # not this protocol: the connection ends
                work = message.get("op") not in self.probes
                if work:
                    self.last_request = time.monotonic()
                try:
                    reply, payload = await self.answer(message)
                except Exception as exc:  # noqa: BLE001 - answer, and keep serving
                    logging.getLogger(self.log_name).exception("request %s failed", message.get("op"))
                    reply, payload = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}, None
                if work:  # (a long request counts until it is answered)
                    self.last_request = time.monotonic()
                if "id" in message:
                    reply["id"] = message["id"]
                    if payload is not None:
                        reply["payload"] = len(payload)
                    writer.write(frame(reply) + (payload or b""))
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def _on_signal(self) -> None:
        self.stop_requested()
        self.stopping.set()

    async def run(self) -> int:
        await self.listen()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal)
        await self.started()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 1.0)
            if self.stopping.is_set():
                break
            await self.tick()
            if time.monotonic() - self.last_request > self.idle_exit and not self.busy():
                self.close()
                if not self.busy():
                    logging.getLogger(self.log_name).info(self.idle_note, self.idle_exit)
                    return 0
                await self.listen()
        self.close()
        await self.stopped()
        return 0
