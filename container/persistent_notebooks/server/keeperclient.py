"""The kernel keeper's clients: the Jupyter server's (asyncio, one connection per server process; it
also starts the keeper, which runs only while kernels do) and a one-shot status request for programs
without an event loop. The protocol: ../wire.py.

    python -m persistent_notebooks.server.keeperclient     the keeper's status as JSON
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging

from .. import ipc, paths, programs, wire

log = logging.getLogger("persistent_notebooks")
TIMEOUT = 2.0
START_TIMEOUT = 30.0  # seconds for a keeper started on demand to answer (a busy machine starts Python slowly)


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
                reply, payload = await ipc.read_reply(reader)
                future = self.pending.pop(reply.get("id"), None)
                if future and not future.done():
                    future.set_result((reply, payload))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()
            if self.writer is writer:
                self.writer = None
                for future in self.pending.values():  # asked of a keeper that has gone: no answer comes
                    if not future.done():
                        future.set_exception(ConnectionError("the kernel keeper closed the connection"))

    async def request(self, op: str, **fields) -> tuple[dict, bytes]:
        writer = await self._connection()
        request_id = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        writer.write(ipc.frame({"op": op, "id": request_id, **fields}))
        try:
            return await asyncio.wait_for(future, TIMEOUT)
        finally:
            self.pending.pop(request_id, None)

    def send(self, op: str, **fields) -> None:
        """Fire and forget (ack, watch, forget): the keeper rereads the records when it restarts."""
        data = ipc.frame({"op": op, **fields})
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

    async def ensure_running(self) -> bool:
        """Before a kernel is launched: make sure the keeper runs (a ping also keeps an idle one from
        exiting); when none answers, have supervisord start one and wait until it answers."""
        loop = asyncio.get_running_loop()
        deadline, asked = loop.time() + START_TIMEOUT, 0.0
        while True:
            try:
                await self.request("ping")
                return True
            except (TimeoutError, OSError) as exc:
                problem = exc
            now = loop.time()
            if now > deadline:
                log.warning("the kernel keeper did not answer within %.0f s (%s): output printed while no "
                            "client is connected is not kept for this kernel until it does", START_TIMEOUT, problem)
                return False
            if now - asked > 0.5:  # again while an exiting keeper is still being replaced
                asked = now
                try:
                    await loop.run_in_executor(None, programs.start, programs.KEEPER)
                except programs.ProgramError as exc:
                    log.warning("%s", exc)
            await asyncio.sleep(0.05)

    async def fetch(self, kernel_id: str, after: str | None = None) -> wire.Kept:
        """The kept output of a kernel: everything not yet delivered, or what came after msg_id `after`."""
        try:
            reply, payload = await self.request("fetch", kernel_id=kernel_id, after=after)
        except (TimeoutError, OSError) as exc:
            log.warning("kernel keeper unreachable, no kept output for %s: %s", kernel_id, exc)
            return wire.Kept([])
        if reply.get("ok") is False:
            log.warning("kernel keeper could not fetch the kept output of %s: %s", kernel_id, reply.get("error"))
            return wire.Kept([])
        try:
            messages = wire.unpack_messages(payload)
        except ValueError as exc:
            log.warning("kernel keeper sent a damaged reply for %s: %s", kernel_id, exc)
            return wire.Kept([])
        since = reply.get("since")
        return wire.Kept(messages, float(since) if isinstance(since, (int, float)) else None)


KEEPER = KeeperClient()


def status_sync(timeout: float = 2.0) -> dict:
    """The keeper's view of every kernel, asked without an event loop (server start-up, notebookctl,
    the watchdog)."""
    return ipc.request_sync(paths.KEEPER_SOCKET, {"op": "status"}, timeout)[0]


if __name__ == "__main__":  # python -m persistent_notebooks.server.keeperclient: the keeper's status as JSON
    print(json.dumps(status_sync(), indent=1))
