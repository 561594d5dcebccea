"""The kernel keeper's clients: the Jupyter server's (asyncio, one connection per server process) and a
one-shot status request for programs without an event loop. The protocol: ../wire.py.

    python -m persistent_notebooks.keeper.client     the keeper's status as JSON
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import struct

from .. import paths, wire

log = logging.getLogger("persistent_notebooks")
TIMEOUT = 2.0


class KeeperClient:
    """One connection per server process, made on first use and again after the keeper restarts."""

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None
        self.pending: dict[int, asyncio.Future] = {}
        self.ids = itertools.count(1)
        self.lock: asyncio.Lock | None = None

    async def _connection(self) -> asyncio.StreamWriter:
        if self.writer is not None and not self.writer.is_closing():
            return self.writer
        self.lock = self.lock or asyncio.Lock()
        async with self.lock:
            if self.writer is None or self.writer.is_closing():
                reader, self.writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(str(paths.KEEPER_SOCKET)), TIMEOUT)
                asyncio.ensure_future(self._read(reader, self.writer))
        return self.writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!I", await reader.readexactly(4))
                reply = json.loads(await reader.readexactly(length))
                payload = await reader.readexactly(reply["payload"]) if "payload" in reply else b""
                future = self.pending.pop(reply.get("id"), None)
                if future and not future.done():
                    future.set_result((reply, payload))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()
            if self.writer is writer:
                self.writer = None

    async def request(self, op: str, **fields) -> tuple[dict, bytes]:
        writer = await self._connection()
        request_id = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        writer.write(wire.frame({"op": op, "id": request_id, **fields}))
        try:
            return await asyncio.wait_for(future, TIMEOUT)
        finally:
            self.pending.pop(request_id, None)

    def send(self, op: str, **fields) -> None:
        """Fire and forget (ack, watch, forget): the keeper rereads the records when it restarts."""
        data = wire.frame({"op": op, **fields})
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(data)
            return

        async def send():
            try:
                (await self._connection()).write(data)
            except (TimeoutError, OSError) as exc:
                log.debug("kernel keeper unreachable for %s: %s", op, exc)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        asyncio.ensure_future(send())

    async def fetch(self, kernel_id: str, after: str | None = None) -> list[list[bytes]]:
        """The kept output of a kernel: everything not yet delivered, or what came after msg_id `after`."""
        try:
            _, payload = await self.request("fetch", kernel_id=kernel_id, after=after)
        except (TimeoutError, OSError) as exc:
            log.warning("kernel keeper unreachable, no kept output for %s: %s", kernel_id, exc)
            return []
        try:
            return wire.unpack_messages(payload)
        except ValueError as exc:
            log.warning("kernel keeper sent a damaged reply for %s: %s", kernel_id, exc)
            return []


KEEPER = KeeperClient()


def status_sync(timeout: float = 2.0) -> dict:
    """The keeper's view of every kernel, asked without an event loop (server start-up, notebookctl,
    the watchdog)."""
    return wire.request_sync(paths.KEEPER_SOCKET, {"op": "status"}, timeout)[0]


if __name__ == "__main__":  # python -m persistent_notebooks.keeperclient: the keeper's status as JSON
    print(json.dumps(status_sync(), indent=1))
