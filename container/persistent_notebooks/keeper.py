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

Protocol, on a unix socket in the private run/ folder: each frame is a 4-byte big-endian length
and a JSON object; a reply may carry `payload` bytes after it (messages packed as frame counts,
frame lengths and frames).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import struct
import sys
import time
from collections import deque
from pathlib import Path

import zmq
import zmq.asyncio
from jupyter_client.session import Session

from . import paths

log = logging.getLogger("kernel-keeper")
DELIM = b"<IDS|MSG>"
OVERHEAD = 256  # bytes counted per kept message on top of its frames (Python objects)
# Status messages in reply to these do not change whether the kernel is busy (as in jupyter_server).
UNTRACKED_PARENTS = {"kernel_info_request", "comm_info_request", "shutdown_request", "interrupt_request",
                     "debug_request", "usage_request"}
SHUTDOWN_WAIT = 8.0  # seconds a kernel gets to exit after a shutdown_request, then SIGTERM, then SIGKILL


def pack_messages(messages: list[list[bytes]]) -> bytes:
    out = []
    for frames in messages:
        out.append(struct.pack("!I", len(frames)))
        for frame in frames:
            out.append(struct.pack("!I", len(frame)))
            out.append(frame)
    return b"".join(out)


def unpack_messages(payload: bytes) -> list[list[bytes]]:
    view, pos, messages = memoryview(payload), 0, []
    while pos < len(view):
        (count,) = struct.unpack_from("!I", view, pos)
        pos += 4
        frames = []
        for _ in range(count):
            (size,) = struct.unpack_from("!I", view, pos)
            pos += 4
            frames.append(bytes(view[pos:pos + size]))
            pos += size
        messages.append(frames)
    return messages


def split(frames: list[bytes]) -> tuple[dict, int]:
    """The header of a raw IOPub message and the index of its delimiter."""
    i = frames.index(DELIM)
    return json.loads(frames[i + 2]), i


class KernelOutput:
    """One kernel: its IOPub subscription and the messages not yet delivered to any client."""

    def __init__(self, record: dict, context: zmq.asyncio.Context, limit: int, recovering: bool = False) -> None:
        self.record = record
        self.kernel_id = record["kernel_id"]
        self.info = json.loads(Path(record["connection_file"]).read_text())
        self.session = Session(key=self.info["key"].encode(), signature_scheme=self.info["signature_scheme"],
                               username="persistent-notebooks")
        self.limit = limit
        self.messages: deque[tuple[int, str, list[bytes], int]] = deque()  # (seq, msg_id, frames, size)
        self.index: dict[str, int] = {}  # msg_id -> seq, for what is kept
        self.size = 0
        self.seq = 0
        self.dropped = self.dropped_bytes = 0
        self.pending_ack: str | None = None  # acknowledged before this keeper received it
        self.execution_state = "unknown"
        self.last_message = time.time()
        # A marker in the state volume while this keeper holds output no client has had: after a
        # restart (kill -9, a hang healed) it tells the next client that such output was lost, in the
        # cell it belonged to (the marker holds that message's parent header).
        self.marker = paths.KEEPER_PENDING_DIR / self.kernel_id
        self.marked = False
        self.marked_parent = b""  # the parent header the marker holds
        self.lost: tuple[bytes, float] | None = None
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
        while True:
            frames = await self.socket.recv_multipart()
            try:
                self.add(frames)
            except (ValueError, KeyError, IndexError):
                log.warning("kernel %s: skipped a malformed IOPub message", self.kernel_id)

    def add(self, frames: list[bytes]) -> None:
        header, i = split(frames)
        msg_id = header["msg_id"]
        self.last_message = time.time()
        if header.get("msg_type") == "status":
            parent = json.loads(frames[i + 3])
            if parent.get("msg_type") not in UNTRACKED_PARENTS:
                self.execution_state = json.loads(frames[i + 5]).get("execution_state", self.execution_state)
        if self.limit <= 0:  # NOTEBOOK_AWAY_BUFFER=0: keep nothing
            return
        if msg_id == self.pending_ack:  # a client already has it, and everything before it
            self.pending_ack = None
            self.clear()
            return
        self.seq += 1
        # The marker names the cell the newest kept output belongs to (rewritten once per cell): a
        # message of no cell (the iopub_welcome a kernel sends each new subscriber) names none.
        parent = frames[i + 3]
        if (not self.messages and not self.marked) or (parent != b"{}" and parent != self.marked_parent):
            self.mark(parent)
        size = sum(len(f) for f in frames) + OVERHEAD
        if size > self.limit and header.get("msg_type") == "stream":
            frames = self.newest_part(frames, i)
            size = sum(len(f) for f in frames) + OVERHEAD
        self.messages.append((self.seq, msg_id, frames, size))
        self.index[msg_id] = self.seq
        self.size += size
        while self.size > self.limit and len(self.messages) > 1:
            self.dropped += 1
            self.dropped_bytes += self.drop_oldest() - OVERHEAD

    def newest_part(self, frames: list[bytes], i: int) -> list[bytes]:
        """A stream message bigger than the whole buffer (100 MiB printed at once): keep the end of its
        text, half the buffer's worth, re-signed under the same message id; the rest counts as dropped."""
        content = json.loads(frames[i + 5])
        data = str(content.get("text", "")).encode()
        keep = max(self.limit // 2, 1)
        tail = data[-keep:].decode("utf-8", "ignore")
        self.dropped += 1
        self.dropped_bytes += len(data) - len(tail.encode())
        new_content = json.dumps({**content, "text": tail}).encode()
        signature = self.session.sign([frames[i + 2], frames[i + 3], frames[i + 4], new_content])
        return [*frames[:i + 1], signature, frames[i + 2], frames[i + 3], frames[i + 4], new_content, *frames[i + 6:]]

    def mark(self, parent: bytes) -> None:
        try:
            paths.private_dir(paths.KEEPER_PENDING_DIR)
            tmp = self.marker.with_name(f".{self.kernel_id}.tmp")
            tmp.write_bytes(parent)
            os.replace(tmp, self.marker)
            self.marked = True
            self.marked_parent = parent
        except OSError as exc:
            log.warning("kernel %s: cannot mark kept output in the state volume: %s", self.kernel_id, exc)

    def unmark(self) -> None:
        """The marker goes once nothing is kept and no loss is left to tell."""
        if self.marked and not self.messages and self.lost is None:
            self.marker.unlink(missing_ok=True)
            self.marked = False

    def lost_note(self) -> list[bytes]:
        """A stream message, in the cell whose output was kept when the keeper ended, saying it is lost."""
        parent_bytes, when = self.lost
        try:
            parent = json.loads(parent_bytes)
        except ValueError:
            parent = {}
        stamp = time.strftime("%H:%M:%S UTC", time.gmtime(when))
        text = (f"[persistent-notebooks: the kernel keeper was restarted at {stamp} or later; output this kernel "
                "printed before that while no client was connected was kept in its memory and is lost. Later "
                "output follows.]\n")
        msg = self.session.msg("stream", content={"name": "stderr", "text": text}, parent=parent)
        return [b"stream.stderr", *self.session.serialize(msg)]

    def drop_oldest(self) -> int:
        """Forget the oldest kept message; return its counted size."""
        _, old_id, _, old_size = self.messages.popleft()
        del self.index[old_id]
        self.size -= old_size
        return old_size

    def clear(self) -> None:
        self.messages.clear()
        self.index.clear()
        self.size = 0
        self.unmark()

    def ack(self, msg_id: str) -> None:
        """A client was sent everything up to msg_id: keep only what came after it."""
        seq = self.index.get(msg_id)
        if seq is None:
            self.pending_ack = msg_id
            return
        while self.messages and self.messages[0][0] <= seq:
            self.drop_oldest()
        self.dropped = self.dropped_bytes = 0
        self.unmark()

    def fetch(self, after: str | None) -> list[list[bytes]]:
        """What no client has had: all that is kept (after=None), or what came after msg_id `after`."""
        seq = self.index.get(after) if after else None
        kept = [frames for s, _, frames, _ in self.messages if seq is None or s > seq]
        if after is None and self.dropped and self.messages:
            kept.insert(0, self.dropped_note())
        if self.lost is not None and (after is None or seq is None):
            kept.insert(0, self.lost_note())
            self.lost = None
            self.unmark()
        return kept

    def dropped_note(self) -> list[bytes]:
        """A stream message, in the cell of the oldest kept message, saying what was dropped."""
        _, _, frames, _ = self.messages[0]
        _, i = split(frames)
        parent = json.loads(frames[i + 3]) or json.loads(frames[i + 2])
        text = (f"[persistent-notebooks: {self.dropped} earlier output messages (or their beginnings) "
                f"({self.dropped_bytes / 2**20:.1f} MiB) printed while no client was connected were dropped: "
                f"more than NOTEBOOK_AWAY_BUFFER={self.limit / 2**20:g} MiB is kept per kernel. "
                "The newest output follows.]\n")
        msg = self.session.msg("stream", content={"name": "stderr", "text": text}, parent=parent)
        return [b"stream.stderr", *self.session.serialize(msg)]

    def status(self) -> dict:
        return {"kept_messages": len(self.messages), "kept_bytes": self.size, "dropped": self.dropped,
                "execution_state": self.execution_state, "pid": self.record.get("pid"),
                "last_message": self.last_message}


class Keeper:
    def __init__(self) -> None:
        self.context = zmq.asyncio.Context()
        self.limit = paths.away_buffer()
        self.kernels: dict[str, KernelOutput] = {}
        self.stopping = asyncio.Event()

    # --- kernels -----------------------------------------------------------------------------

    def watch(self, kernel_id: str, recovering: bool = False) -> None:
        record = paths.read_record(kernel_id)
        if record is None:
            return self.forget(kernel_id)
        old = self.kernels.get(kernel_id)
        if old and old.record.get("connection_file") == record.get("connection_file") and \
                json.loads(Path(record["connection_file"]).read_text()) == old.info:
            old.record = record  # restarted on the same ports: the subscription reconnects by itself
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

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!I", await reader.readexactly(4))
                request = json.loads(await reader.readexactly(length))
                reply, payload = self.handle(request)
                if "id" in request:
                    reply["id"] = request["id"]
                    if payload is not None:
                        reply["payload"] = len(payload)
                    data = json.dumps(reply).encode()
                    writer.write(struct.pack("!I", len(data)) + data + (payload or b""))
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def handle(self, request: dict) -> tuple[dict, bytes | None]:
        op, kernel_id = request.get("op"), request.get("kernel_id", "")
        kernel = self.kernels.get(kernel_id)
        if op == "ack":
            if kernel:
                kernel.ack(request["msg_id"])
        elif op == "fetch":
            messages = kernel.fetch(request.get("after")) if kernel else []
            return {"count": len(messages)}, pack_messages(messages)
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
        records = [r for r in paths.all_records() if paths.kernel_alive(r)]
        if not records:
            return
        log.info("shutting down %d kernel(s)", len(records))
        sockets = []
        for record in records:
            try:
                info = json.loads(Path(record["connection_file"]).read_text())
                session = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"])
                control = self.context.socket(zmq.DEALER)
                control.linger = 1000
                control.connect(f"{info['transport']}://{info['ip']}:{info['control_port']}")
                session.send(control, "shutdown_request", {"restart": False})
                sockets.append(control)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("kernel %s: no shutdown request (%s); terminating it", record["kernel_id"], exc)
        left = await wait_exit(records, SHUTDOWN_WAIT)
        for signum, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
            if not left:
                break
            log.warning("%d kernel(s) did not exit in time: %s", len(left), signum.name)
            for record in left:
                signal_group(record, signum)
            left = await wait_exit(left, wait)
        clean = len(records) - len(left)
        for record in records:
            signal_group(record, signal.SIGKILL)  # what the kernel started and left behind
            paths.remove_record(record["kernel_id"])
            Path(record["connection_file"]).unlink(missing_ok=True)
        for control in sockets:
            control.close()
        log.info("kernels shut down: %d cleanly, %d forced", clean, len(left))

    async def run(self) -> None:
        paths.private_dir(paths.RUN_DIR)
        paths.KEEPER_SOCKET.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self.serve, path=str(paths.KEEPER_SOCKET))
        os.chmod(paths.KEEPER_SOCKET, 0o600)
        for record in paths.all_records():
            if paths.kernel_alive(record):
                self.watch(record["kernel_id"], recovering=True)
        for marker in paths.KEEPER_PENDING_DIR.glob("*") if paths.KEEPER_PENDING_DIR.is_dir() else []:
            if marker.name not in self.kernels:
                marker.unlink(missing_ok=True)  # of a kernel that ended meanwhile
        log.info("following %d kernel(s); keeping up to %s bytes of output per kernel while away",
                 len(self.kernels), self.limit)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        await self.stopping.wait()
        server.close()
        await self.shutdown_kernels()


def signal_group(record: dict, signum: int) -> None:
    try:
        os.killpg(record.get("pgid") or record["pid"], signum)
    except (ProcessLookupError, PermissionError):
        pass


async def wait_exit(records: list[dict], timeout: float) -> list[dict]:
    """Wait until the kernels' processes exit (pidfd, no polling); return those still running."""
    loop = asyncio.get_running_loop()
    waits = []
    for record in records:
        try:
            fd = os.pidfd_open(record["pid"])
        except ProcessLookupError:
            continue
        if not paths.kernel_alive(record):
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
        if not done.done() and paths.kernel_alive(record):
            left.append(record)
    return left


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s kernel-keeper %(levelname)s %(message)s")
    try:
        keeper = Keeper()
    except ValueError as exc:
        log.error("%s", exc)
        return 78
    asyncio.run(keeper.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
