"""The one framing and the on-demand service base (ipc.py) shared by the kernel keeper and the notebook runner."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from persistent_notebooks import ipc


class Echo(ipc.Service):
    """A service that echoes, with a payload, and says when it stopped."""

    idle_exit = 1.0
    idle_note = "idle for %.0f s"
    log_name = "echo"
    probes = frozenset({"ping"})

    def __init__(self, path) -> None:
        super().__init__()
        self.socket_path = path
        self.work = 0
        self.was_stopped = False

    async def answer(self, request):
        if request["op"] == "fail":
            raise RuntimeError("asked to")
        return {"ok": True, "op": request["op"]}, request["op"].encode() * 3

    def busy(self) -> bool:
        return self.work > 0

    async def stopped(self) -> None:
        self.was_stopped = True


def test_a_service_answers_with_payloads_and_exits_when_idle_but_not_for_probes(tmp_path):
    service = Echo(tmp_path / "echo.sock")

    async def scenario():
        task = asyncio.ensure_future(service.run())
        while not service.socket_path.exists():
            await asyncio.sleep(0.01)
        assert oct(service.socket_path.stat().st_mode & 0o777) == "0o600"
        reply, payload = await ipc.request(service.socket_path, {"op": "ab"}, 5)
        assert (reply["ok"], reply["id"], payload) == (True, 1, b"ababab")
        failed, _ = await asyncio.to_thread(ipc.request_sync, service.socket_path, {"op": "fail"}, 5)
        assert failed == {"ok": False, "error": "RuntimeError: asked to", "id": 1}
        asked = time.monotonic()
        service.work = 1
        await asyncio.sleep(1.5)
        assert not task.done(), "a busy service exited"
        service.work = 0
        while not task.done() and time.monotonic() - asked < 6:  # probes meanwhile keep no idle service alive
            await asyncio.sleep(0.2)
            if not task.done():
                await ipc.request(service.socket_path, {"op": "ping"}, 5)
        assert task.done(), "an idle service asked only probes did not exit"
        assert await task == 0 and not service.socket_path.exists() and not service.was_stopped

    asyncio.run(scenario())


def test_sigterm_stops_a_service_and_closes_its_socket(tmp_path):
    service = Echo(tmp_path / "echo.sock")
    service.work = 1

    async def scenario():
        task = asyncio.ensure_future(service.run())
        while not service.socket_path.exists():
            await asyncio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(task, 5) == 0
        assert service.was_stopped and not service.socket_path.exists()

    asyncio.run(scenario())
