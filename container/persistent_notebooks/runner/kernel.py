"""The runner's way to a kernel: its ZeroMQ channels, straight from the connection file in its record (never
through the Jupyter server, so that runs go on through a crash, a kill -9 or a hang of Jupyter).

jupyter_client's Session signs and reads the messages; the three sockets are made here rather than by its
AsyncKernelClient, so that every run and follow shares one context and the IOPub subscription never drops (RCVHWM 0),
and one reader per socket hands our requests' replies and the cell's output to the run in the order they came."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import zmq
import zmq.asyncio
from jupyter_client.session import Session

from .. import jupyterapi
from ..state.kernels import KernelRecord

log = logging.getLogger("notebook-runner")
KERNEL_READY_TIMEOUT = 60.0


class RunError(Exception):
    """A run that cannot start as asked; the message says why and what to do."""


def api(method: str, path: str, body: dict | None = None) -> object:
    try:
        return jupyterapi.api(method, path, body)
    except jupyterapi.ApiError as exc:
        raise RunError(str(exc)) from None


class KernelChannels:
    """Shell, control and IOPub sockets to one kernel, with the messages of our requests queued."""

    def __init__(self, record: KernelRecord, context: zmq.asyncio.Context) -> None:
        info = json.loads(Path(record.connection_file).read_text())
        self.session = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"],
                               username="persistent-notebooks-run")

        def socket(kind: int, port_name: str) -> zmq.asyncio.Socket:
            sock = context.socket(kind)
            sock.linger = 0
            if kind == zmq.SUB:
                sock.setsockopt(zmq.RCVHWM, 0)  # never drop output on our side, whatever the rate
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(f"{info['transport']}://{info['ip']}:{info[port_name]}")
            return sock

        self.iopub = socket(zmq.SUB, "iopub_port")
        self.shell = socket(zmq.DEALER, "shell_port")
        self.control = socket(zmq.DEALER, "control_port")
        self.queue: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
        self.expected: set[str] = set()
        self.tasks = [asyncio.ensure_future(self._read(name, sock))
                      for name, sock in (("iopub", self.iopub), ("shell", self.shell), ("control", self.control))]

    async def _read(self, channel: str, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart()
            try:
                _, parts = self.session.feed_identities(frames, copy=True)
                msg = self.session.deserialize(parts, content=True)
            except Exception:  # noqa: BLE001 - a malformed message is skipped, never the end of the run
                log.warning("skipped a malformed message on %s", channel)
                continue
            if msg["parent_header"].get("msg_id") in self.expected:
                self.queue.put_nowait((channel, msg))

    def send(self, channel: str, msg_type: str, content: dict) -> str:
        msg = self.session.msg(msg_type, content)
        self.expected.add(msg["header"]["msg_id"])
        self.session.send(self.shell if channel == "shell" else self.control, msg)
        return msg["header"]["msg_id"]

    async def ready(self, alive, timeout: float = KERNEL_READY_TIMEOUT) -> None:
        """Wait until the kernel answers and our IOPub subscription is live (a status message of ours
        arrived on it), so that no output of the first cell is missed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg_id = self.send("control", "kernel_info_request", {})
            wait_until = time.monotonic() + 1.0
            while time.monotonic() < wait_until:
                try:
                    channel, msg = await asyncio.wait_for(self.queue.get(), 0.2)
                except TimeoutError:
                    if not alive():
                        raise RunError("the kernel ended before the run could start") from None
                    continue
                if channel == "iopub" and msg["parent_header"].get("msg_id") == msg_id:
                    self.drain()
                    return
        raise RunError(f"the kernel did not answer within {timeout:.0f} s")

    def drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.expected.clear()

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for sock in (self.iopub, self.shell, self.control):
            sock.close()
