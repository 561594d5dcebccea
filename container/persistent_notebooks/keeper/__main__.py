"""The kernel keeper: keeps each kernel's output while nobody is connected, and ends kernels at stop.

A supervised process of its own (supervisord's `kernel-keeper`), so that it outlives both a client
drop and a Jupyter crash. For every kernel in the records (kernels/ in the state volume) it holds a
subscription to the kernel's IOPub channel and keeps, in order and as the raw signed frames, every
message that no client has been sent yet: the Jupyter server acknowledges what it delivered to a
websocket (`ack`), and everything after the last acknowledged message stays here, bounded by
NOTEBOOK_AWAY_BUFFER per kernel (oldest first out, counted). A client that connects gets it back
(`fetch`) before live messages. With a client connected, acknowledgements keep this near empty.

On SIGTERM (the container stops: supervisord stops Jupyter first, then this) it shuts every
kernel down cleanly through its control channel, and ends what is left of each process group.

It runs only while kernels do: the Jupyter server starts it (through supervisord) before it launches
a kernel, and it exits by itself once it has followed no kernel, and been asked nothing but its
status, for IDLE_EXIT seconds; an idle stack pays nothing for it.

What is kept of each kernel, and how it is bounded: buffer.py. Its unix socket (in the private run/ folder) and
its life as an on-demand program: ipc.py, its requests: wire.py. The Jupyter server's side: server/keeperclient.py.

    python -m persistent_notebooks.keeper      (supervisord's kernel-keeper program)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import zmq
import zmq.asyncio

from .. import atomic, ipc, kernelstate, paths, settings, wire
from ..state import kernels as records
from ..state.kernels import KernelRecord
from ..wire import Signer
from .buffer import OutputBuffer

log = logging.getLogger("kernel-keeper")
SHUTDOWN_WAIT = 8.0  # seconds a kernel gets to exit after a shutdown_request, then SIGTERM, then SIGKILL
SAVING_WAIT = 40.0  # ... or, while it writes its state (kernelstate.WRITING), this long in all
IDLE_EXIT = 20.0  # seconds with no kernel to follow and no request (but status), then the keeper exits
RETRY_WATCH = 5.0  # seconds between looks for running kernels it does not follow
RECHECK = 5.0  # seconds a kernel's subscription waits before it looks at its socket again
BATCH = 1000  # messages read from a kernel at once before the keeper serves its requests


class KernelOutput(OutputBuffer):
    """One kernel: its IOPub subscription, and the messages not yet delivered to any client."""

    def __init__(self, record: KernelRecord, context: zmq.asyncio.Context, limit: int,
                 recovering: bool = False) -> None:
        self.record = record
        self.kernel_id = record.kernel_id
        self.info = json.loads(Path(record.connection_file).read_text())
        super().__init__(Signer(self.info["key"].encode(), self.info["signature_scheme"]), limit)
        # A marker in the state volume while this keeper holds output no client has had: after a
        # restart (kill -9, a hang healed) it tells the next client that such output was lost, in the
        # cell it belonged to (the marker holds that message's parent header).
        self.marker = paths.KEEPER_PENDING_DIR / self.kernel_id
        if recovering:  # this keeper is new: a marker left by the one before means lost output
            try:
                self.lost = (self.marker.read_bytes(), self.marker.stat().st_mtime)
                self.marked = True
            except OSError:
                pass
        self.socket = context.socket(zmq.SUB)
        self.socket.linger = 0
        self.socket.setsockopt(zmq.RCVHWM, 0)  # never drop a burst on our side (NOTEBOOK_AWAY_BUFFER bounds)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.connect(f"{self.info['transport']}://{self.info['ip']}:{self.info['iopub_port']}")
        self.task = asyncio.ensure_future(self.receive())

    def close(self, forget: bool = False) -> None:
        self.task.cancel()
        self.socket.close()
        if forget:  # the kernel is gone: nothing of it is left to tell about
            self.marker.unlink(missing_ok=True)

    async def receive(self) -> None:
        """Every message the kernel publishes, in order: a bounded wait on the socket, then what it holds, read
        without waiting (ZeroMQ's own pattern for its edge-triggered descriptor). A wakeup the event loop misses
        delays the kernel's output by RECHECK seconds at most instead of stopping it."""
        reader = zmq.Socket.shadow(self.socket.underlying)
        while True:
            await self.socket.poll(RECHECK * 1000)
            for _ in range(BATCH):
                try:
                    frames = reader.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    self.add(frames)
                except (ValueError, KeyError, IndexError):
                    log.warning("kernel %s: skipped a malformed IOPub message", self.kernel_id)
                except Exception:  # any other fault loses this one message, never the following ones
                    log.exception("kernel %s: could not keep an IOPub message", self.kernel_id)
            await asyncio.sleep(0)  # requests (fetch, ack) are served between batches of a flood

    def mark(self, parent: bytes) -> None:
        try:
            paths.private_dir(paths.KEEPER_PENDING_DIR)
            atomic.write(self.marker, parent, 0o600, fsync=False)
            super().mark(parent)
        except OSError as exc:
            log.warning("kernel %s: cannot mark kept output in the state volume: %s", self.kernel_id, exc)

    def unmark(self) -> None:
        was = self.marked
        super().unmark()
        if was and not self.marked:
            self.marker.unlink(missing_ok=True)

    def status(self) -> dict:
        return {**super().status(), "pid": self.record.pid}


class Keeper(ipc.Service):
    """Every running kernel's output while no client reads it, kept; the kernels ended cleanly at container stop."""

    socket_path = paths.KEEPER_SOCKET
    idle_exit = IDLE_EXIT
    idle_note = "no kernel for %.0f s: exiting (the next kernel starts the keeper again)"
    probes = frozenset({"status"})  # the watchdog's probe; a "ping" (a kernel is about to be launched) is work
    log_name = "kernel-keeper"

    def __init__(self) -> None:
        super().__init__()
        self.context = zmq.asyncio.Context()
        self.limit = settings.away_buffer()
        self.kernels: dict[str, KernelOutput] = {}
        self.last_retry = time.monotonic()

    # --- kernels -----------------------------------------------------------------------------

    def watch(self, kernel_id: str, recovering: bool = False) -> None:
        record = records.read(kernel_id)
        if record is None:
            return self.forget(kernel_id)
        old = self.kernels.get(kernel_id)
        if old and old.record.connection_file == record.connection_file and \
                json.loads(Path(record.connection_file).read_text()) == old.info:
            if old.record.pid != record.pid:  # restarted on the same ports: the subscription reconnects by itself,
                old.since = None  # and what the new kernel publishes before that is missed
            old.record = record
            return
        try:
            new = KernelOutput(record, self.context, self.limit, recovering)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("kernel %s: cannot follow its output (%s)", kernel_id, exc)
            return
        if old:
            new.marked = new.marked or old.marked  # its marker file stays until the new one empties
            old.close()
        self.kernels[kernel_id] = new

    def forget(self, kernel_id: str) -> None:
        old = self.kernels.pop(kernel_id, None)
        if old:
            old.close(forget=True)
        else:
            (paths.KEEPER_PENDING_DIR / kernel_id).unlink(missing_ok=True)

    # --- requests ----------------------------------------------------------------------------

    async def answer(self, request: dict) -> tuple[dict, bytes | None]:
        return self.handle(request)

    def handle(self, request: dict) -> tuple[dict, bytes | None]:
        op, kernel_id = request.get("op"), request.get("kernel_id", "")
        kernel = self.kernels.get(kernel_id)
        if op == "ping":  # a kernel is about to be launched
            pass
        elif op == "ack":
            if kernel:
                kernel.ack(request["msg_id"])
        elif op == "fetch":
            messages = kernel.fetch(request.get("after")) if kernel else []
            return {"count": len(messages), "since": kernel and kernel.since}, wire.pack_messages(messages)
        elif op == "watch":
            self.watch(kernel_id)
        elif op == "forget":
            self.forget(kernel_id)
        elif op == "status":
            return {"kernels": {k: v.status() for k, v in self.kernels.items()}, "limit": self.limit}, None
        else:
            return {"error": f"unknown op {op!r}"}, None
        return {}, None

    # --- stopping ----------------------------------------------------------------------------

    async def shutdown_kernels(self) -> None:
        """Shut every recorded kernel down cleanly (control channel), then end what is left."""
        live = records.live()
        if not live:
            return
        # Kernels shut down from now on save their variables first (kernelstate: KERNEL_SNAPSHOTS).
        try:
            paths.write_private(paths.STOPPING_MARKER, "")
        except OSError as exc:
            log.warning("cannot mark the container as stopping (%s): kernels keep only their last checkpoint", exc)
        log.info("shutting down %d kernel(s)", len(live))
        sockets = []
        for record in live:
            try:
                info = json.loads(Path(record.connection_file).read_text())
                signer = Signer(info["key"].encode(), info["signature_scheme"])
                control = self.context.socket(zmq.DEALER)
                control.linger = 1000
                control.connect(f"{info['transport']}://{info['ip']}:{info['control_port']}")
                control.send_multipart(signer.message("shutdown_request", {"restart": False}))
                sockets.append(control)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("kernel %s: no shutdown request (%s); terminating it", record.kernel_id, exc)
        left = await wait_exit(live, SHUTDOWN_WAIT)
        loop, waited = asyncio.get_running_loop(), SHUTDOWN_WAIT
        while waited < SAVING_WAIT and (saving := [r for r in left if saving_state(r)]):
            log.info("waiting for %d kernel(s) to finish saving their state", len(saving))
            started = loop.time()
            left = [r for r in left if r not in saving] + await wait_exit(saving, 1.0)
            waited += loop.time() - started
        for signum, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
            if not left:
                break
            log.warning("%d kernel(s) did not exit in time: %s", len(left), signum.name)
            for record in left:
                signal_group(record, signum)
            left = await wait_exit(left, wait)
        clean = len(live) - len(left)
        for record in live:
            signal_group(record, signal.SIGKILL)  # what the kernel started and left behind
        # The records stay: their owner, the next Jupyter server, finds the kernels dead and removes them.
        for control in sockets:
            control.close()
        log.info("kernels shut down: %d cleanly, %d forced", clean, len(left))

    def busy(self) -> bool:
        return bool(self.kernels) or bool(records.live())

    async def tick(self) -> None:
        """Every RETRY_WATCH seconds, follow a running kernel it could not follow before (e.g. its connection
        file was not readable yet)."""
        if time.monotonic() - self.last_retry > RETRY_WATCH:
            self.last_retry = time.monotonic()
            for record in records.live():
                if record.kernel_id not in self.kernels:
                    self.watch(record.kernel_id, recovering=True)

    async def listen(self) -> None:
        """Serve the socket, then follow every running kernel (recorded before the socket was there)."""
        await super().listen()
        for record in records.live():
            if record.kernel_id not in self.kernels:
                self.watch(record.kernel_id, recovering=True)

    async def started(self) -> None:
        for marker in paths.KEEPER_PENDING_DIR.glob("*") if paths.KEEPER_PENDING_DIR.is_dir() else []:
            if marker.name not in self.kernels:
                marker.unlink(missing_ok=True)  # of a kernel that ended meanwhile
        log.info("following %d kernel(s); keeping up to %s bytes of output per kernel while away",
                 len(self.kernels), self.limit)

    async def stopped(self) -> None:
        await self.shutdown_kernels()

    async def run(self) -> int:
        paths.private_dir(paths.RUN_DIR)
        return await super().run()


def saving_state(record: KernelRecord) -> bool:
    return (paths.KERNEL_STATE_DIR / record.kernel_id / kernelstate.WRITING).exists()


def signal_group(record: KernelRecord, signum: int) -> None:
    try:
        os.killpg(record.pgid or record.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


async def wait_exit(kernels: list[KernelRecord], timeout: float) -> list[KernelRecord]:
    """Wait until the kernels' processes exit (pidfd, no polling); return those still running."""
    loop = asyncio.get_running_loop()
    waits = []
    for record in kernels:
        try:
            fd = os.pidfd_open(record.pid)
        except ProcessLookupError:
            continue
        if not record.alive():
            os.close(fd)
            continue
        done = loop.create_future()
        loop.add_reader(fd, lambda f=done: f.done() or f.set_result(None))
        waits.append((record, fd, done))
    if waits:
        await asyncio.wait([w[2] for w in waits], timeout=timeout)
    left = []
    for record, fd, done in waits:
        loop.remove_reader(fd)
        os.close(fd)
        if not done.done() and record.alive():
            left.append(record)
    return left


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s kernel-keeper %(levelname)s %(message)s")
    try:
        keeper = Keeper()
    except settings.SettingError as exc:
        log.error("%s", exc)
        return 78
    return asyncio.run(keeper.run())


if __name__ == "__main__":
    sys.exit(main())
