"""The kernel websocket connection: the output kept while away first, then live output, nothing twice.

When a client is the only one connected to a kernel, it is first sent what the kernel keeper kept
(everything published since the last message any client was sent, whatever the session id), with
the original headers and parent headers, before any live message. Live IOPub messages that arrive
meanwhile are held; the handover ends when the keeper's record reaches the first held message, so
no message falls between the two. Every IOPub message the client has read is acknowledged to the
keeper (a websocket ping after it, answered: at most every ACK_DELAY seconds), which then keeps
only what came after it: while a client is connected, nothing piles up, and what a client was sent
but never read (it dropped meanwhile) goes to the next one.

Stream output, live and kept, is coalesced (coalesce.py) instead of dropped past a rate. And the
kernel info a new connection waits for is asked on the control channel too, where a busy kernel
answers at once: a kernel adopted after a crash is reachable while its cell runs. And what a client sent just
before it closed reaches the kernel before its channels close (Jupyter would drop it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import zmq
from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado.ioloop import IOLoop
from tornado.iostream import StreamBufferFullError
from tornado.websocket import WebSocketClosedError

from .. import settings
from .coalesce import Coalescer, coalesce
from .follow import hand_over, lab_cell
from .handover import Message, before_live, known_older, msg_id_of
from .keeperclient import KEEPER
from .sessions import note_notebook, notebook_of_cell

ACK_DELAY = 0.25
PING_PREFIX = b"pn-ack-"
CATCH_UP = 2.0  # seconds the keeper may make no progress towards the first live message, then live
CATCH_UP_MAX = 15.0  # ... and in all (meanwhile live messages wait in the server's memory)
REPLAYED_FOR = 30.0
KEEPING = settings.away_buffer() > 0
# Bytes sent to a client and not read by it, at most (then its connection is dropped): room for a whole replay
# of what the keeper holds (NOTEBOOK_AWAY_BUFFER) to a slow client, and 16 MiB of live output.
BACKLOG_LIMIT = settings.away_buffer() + (16 << 20)  # NOTEBOOK_AWAY_BUFFER=0: nothing kept, Jupyter's own websocket


# kernel id -> the kernel clients (websocket session ids: a JupyterLab page's, kept across its reconnections)
# connected now, with how many connections each: the kernel model's "clients" (server/kernels.py), which the
# runner reads to know whether the page that sent cells is still there.
CLIENTS: dict[str, dict[str, int]] = {}
# kernel id -> connections whose websocket has closed but whose channels wait for held cells (disconnect): Jupyter
# still counts them, the handover does not.
CLOSING: dict[str, int] = {}


class KeptOutputConnection(ZMQChannelsWebsocketConnection):
    """Jupyter's ZMQ websocket connection with the kept output first and acknowledgements after."""

    _held: list | None = None
    _held_event: asyncio.Event | None = None
    _replay_task: asyncio.Future | None = None
    _last_sent: str | None = None
    _acked: str | None = None
    _ack_handle = None
    _ping_seq = 0
    _pinged: dict | None = None
    _pong_hooked = False
    _coalescer: Coalescer | None = None
    _connected_at = 0.0  # time.time() before this connection subscribed to the kernel's IOPub
    _subprotocol: str | None = None
    # Sent from the keeper, and maybe still to come on the live stream: skipped there (each once).
    # The keeper may have joined the kernel's output later than this connection (after a restart),
    # so the overlap can start after live-only messages: the set is kept until emptied, or for
    # REPLAYED_FOR seconds.
    _replayed: set | None = None

    @property
    def subprotocol(self):
        """Jupyter's, as negotiated at connect: kept once the websocket has closed, for the messages still held
        behind a cell (Jupyter reads it from the websocket, which forgets it at its close)."""
        return self._subprotocol or super().subprotocol

    def connect(self):
        self._subprotocol = super().subprotocol
        self._connected_at = time.time()
        connected = super().connect()
        if connected is not None:
            clients = CLIENTS.setdefault(self.kernel_id, {})
            clients[self.session_id] = clients.get(self.session_id, 0) + 1
            self._counted = True
        # What this client has not read stays in Tornado's write buffer, without bound: a client that stops
        # reading (a laptop asleep, its tunnel's TCP connection still open) would grow Jupyter by what the
        # kernel prints. Past BACKLOG_LIMIT the connection is dropped instead (_backlogged): the keeper still
        # holds what it was never acknowledged, for the client's reconnection.
        with contextlib.suppress(AttributeError):
            self.websocket_handler.ws_connection.stream.max_write_buffer_size = BACKLOG_LIMIT
        if connected is None or not KEEPING:
            return connected
        if self._alone():
            self._held, self._held_event = [], asyncio.Event()
            connected.add_done_callback(
                lambda _: setattr(self, "_replay_task", asyncio.ensure_future(self._replay())))
        return connected

    # --- incoming -----------------------------------------------------------------------------------

    _notebooks_noted: dict | None = None  # cell URI -> when it was last noted

    _counted = False
    _forwarding: list | None = None  # messages held, in order, behind a cell handed to the runner
    _closing = False  # the websocket closed while messages were held: the channels close after them

    def handle_incoming_message(self, incoming_msg) -> None:
        """As Jupyter does, with two readings of an execute request that names its cell (metadata.cellId):
        JupyterLab's (the cell's id) is handed to the notebook runner before it goes on to the kernel, and the
        messages after it wait their turn (server/follow.py); VSCode's (a URI whose path is the notebook's)
        tells which notebook this kernel runs, for runs and the kernel list."""
        if self._forwarding is not None:
            self._forwarding.append(incoming_msg)
            return None
        marker = b"cellId" if isinstance(incoming_msg, bytes) else "cellId"
        if marker in incoming_msg:
            try:
                request = self._cell_request(incoming_msg)
                cell = request and lab_cell(self.kernel_id, self.session_id, *request)
                if request and cell is None:
                    self._note_editor_notebook(request[1])
            except Exception:  # noqa: BLE001 - never in the way of the message itself
                self.log.debug("could not read the cell id of a message to kernel %s", self.kernel_id, exc_info=True)
                cell = None
            if cell is not None:
                self._forwarding = [incoming_msg]
                asyncio.ensure_future(self._forward_held(cell))
                return None
        return super().handle_incoming_message(incoming_msg)

    async def _forward_held(self, cell) -> None:
        """Hand each held message's cell to the runner, then send it on, in order; a close of the websocket
        meanwhile waits for them (disconnect)."""
        try:
            while self._forwarding:
                if cell is not None:
                    await hand_over(cell)
                super().handle_incoming_message(self._forwarding.pop(0))
                cell = None
                if self._forwarding:
                    with contextlib.suppress(Exception):
                        request = self._cell_request(self._forwarding[0])
                        cell = request and lab_cell(self.kernel_id, self.session_id, *request)
        except Exception:  # noqa: BLE001 - the held messages still go on, unfollowed
            self.log.exception("Handing JupyterLab's cells of kernel %s to the runner failed", self.kernel_id)
            for msg in self._forwarding or []:
                with contextlib.suppress(Exception):
                    super().handle_incoming_message(msg)
        finally:
            self._forwarding = None
            if self._closing:
                self.disconnect()

    def _cell_request(self, incoming_msg) -> tuple[dict, dict, dict] | None:
        """The header, metadata and content of an execute request that names its cell (metadata.cellId)."""
        marker = b"cellId" if isinstance(incoming_msg, bytes) else "cellId"
        if marker not in incoming_msg:
            return None
        if self.subprotocol == "v1.kernel.websocket.jupyter.org":
            _, parts = deserialize_msg_from_ws_v1(incoming_msg)
            header, metadata = json.loads(parts[0]), json.loads(parts[2])
            content = json.loads(parts[3]) if len(parts) > 3 else {}
        else:
            msg = json.loads(incoming_msg)
            header, metadata, content = msg.get("header") or {}, msg.get("metadata") or {}, msg.get("content") or {}
        if header.get("msg_type") != "execute_request" or "cellId" not in metadata:
            return None
        return header, metadata, content

    def _note_editor_notebook(self, metadata: dict) -> None:
        """A VSCode cell (its cellId a URI whose path is the notebook's): note the notebook in the kernel's
        record, at most once a minute per notebook."""
        uri = metadata.get("cellId")
        if not isinstance(uri, str):
            return
        uri = uri.split("#", 1)[0]
        self._notebooks_noted = self._notebooks_noted or {}
        now = time.monotonic()
        if now - self._notebooks_noted.get(uri, -60.0) < 60:
            return
        self._notebooks_noted[uri] = now
        notebook = notebook_of_cell(uri)
        if notebook:
            note_notebook(self.kernel_id, notebook)

    # --- kernel info --------------------------------------------------------------------------------

    def request_kernel_info(self):
        """Ask on the control channel too: a busy kernel answers there at once.

        Jupyter asks only on the shell channel, where the request waits behind the running cell: a
        kernel adopted after a crash (the new server has no reply cached) would be out of reach until
        its cell ended. The first reply, from either channel, is the one kept.
        """
        asked = not hasattr(self.kernel_manager, "_kernel_info_future")
        future = super().request_kernel_info()
        if asked and not future.done():
            control = self.multi_kernel_manager.connect_control(self.kernel_id)

            def on_reply(msg_list: list) -> None:
                try:
                    _, fed = self.session.feed_identities(msg_list)
                    msg = self.session.deserialize(fed)
                except Exception:  # noqa: BLE001 - the shell channel's reply will do
                    return
                if msg["msg_type"] == "kernel_info_reply" and "protocol_version" in msg["content"]:
                    self._finish_kernel_info(msg["content"])

            control.on_recv(on_reply)
            self.session.send(control, "kernel_info_request")
            future.add_done_callback(lambda _: control.closed() or control.close())
        return future

    # --- outgoing --------------------------------------------------------------------------------

    def handle_outgoing_message(self, stream, outgoing_msg):
        channel = stream if isinstance(stream, str) else getattr(stream, "channel", None)
        if channel != "iopub":
            try:
                return super().handle_outgoing_message(stream, outgoing_msg)
            except StreamBufferFullError:
                return self._backlogged()
        if KEEPING:
            msg_id = msg_id_of(outgoing_msg)
            if self._held is not None:
                self._held.append((msg_id, outgoing_msg))
                self._held_event.set()
                return None
            if self._replayed and msg_id in self._replayed:
                self._replayed.discard(msg_id)
                return None
        self._coalescing.push(outgoing_msg)
        return None

    @property
    def _coalescing(self) -> Coalescer:
        if self._coalescer is None:
            loop = IOLoop.current()
            self._coalescer = Coalescer(self.session, self._emit, loop.time, loop.call_later, loop.remove_timeout)
        return self._coalescer

    def _emit(self, msg_list: list) -> None:
        """Send a live IOPub message (maybe several merged) as Jupyter does, and note it for the keeper."""
        stream = self.channels.get("iopub")
        if stream is None or stream.closed():
            return
        try:
            super().handle_outgoing_message(stream, msg_list)
        except StreamBufferFullError:
            return self._backlogged()
        if KEEPING:
            self._sent(msg_id_of(msg_list))

    def _send_kept(self, msg_list: list) -> None:
        """Send a kept IOPub message as a live one is sent, but past the rate limit (it is history)."""
        _, fed = self.session.feed_identities(msg_list)
        v1 = self.subprotocol == "v1.kernel.websocket.jupyter.org"
        msg = {"header": None, "parent_header": None, "content": None} if v1 else self.session.deserialize(fed)
        stream = self.channels["iopub"]
        self._on_error("iopub", msg, fed[1:])
        try:
            self._on_zmq_reply(stream, fed[1:] if v1 else msg)
        except StreamBufferFullError:
            self._backlogged()
            raise WebSocketClosedError() from None

    def _backlogged(self) -> None:
        """The client has not read BACKLOG_LIMIT bytes: drop the connection (its socket, buffer and all); the
        client reconnects when it reads again, and gets what it missed from the keeper."""
        self.log.warning("A client of kernel %s has not read %d MiB sent to it: closing its connection (it gets "
                         "what it missed when it reconnects)", self.kernel_id, BACKLOG_LIMIT >> 20)
        with contextlib.suppress(AttributeError):
            self.websocket_handler.ws_connection.stream.close()

    def _sent(self, msg_id: str | None) -> None:
        if msg_id is None:
            return
        self._last_sent = msg_id
        if self._ack_handle is None:
            self._ack_handle = IOLoop.current().call_later(ACK_DELAY, self._probe)

    # Acknowledged to the keeper is only what the client is known to have read: every ACK_DELAY
    # seconds while output flows, a websocket ping goes out after the messages sent so far, and its
    # pong (which a client sends once it has read everything before the ping) acknowledges them. What
    # was written to a client that stopped reading or dropped (in its socket, never read) stays with
    # the keeper and goes to the next client: at the boundary a returning client may see again what
    # was sent to it in the last ACK_DELAY seconds or so before it dropped, never less.

    def _probe(self) -> None:
        self._ack_handle = None
        if self._last_sent is None or self._last_sent == self._acked:
            return
        handler = self.websocket_handler
        if not self._pong_hooked:
            self._pong_hooked = True
            jupyters_on_pong = handler.on_pong  # the ping-timeout bookkeeping of Jupyter's handler

            def on_pong(data: bytes) -> None:
                jupyters_on_pong(data)
                self._on_pong(data)

            handler.on_pong = on_pong
        if self._pinged is None:
            self._pinged = {}
        self._ping_seq += 1
        self._pinged[self._ping_seq] = self._last_sent
        try:
            handler.ping(PING_PREFIX + str(self._ping_seq).encode())
        except WebSocketClosedError:
            self._pinged.clear()

    def _on_pong(self, data: bytes) -> None:
        if not data.startswith(PING_PREFIX) or self._pinged is None:
            return
        try:
            seq = int(data[len(PING_PREFIX):])
        except ValueError:
            return
        msg_id = self._pinged.get(seq)
        for older in [k for k in self._pinged if k <= seq]:
            del self._pinged[older]
        if msg_id is not None:
            self._acked = msg_id
            KEEPER.send("ack", kernel_id=self.kernel_id, msg_id=msg_id)
        if self._last_sent != self._acked and self._ack_handle is None:
            self._ack_handle = IOLoop.current().call_later(ACK_DELAY, self._probe)

    # --- the handover ----------------------------------------------------------------------------

    async def _replay(self) -> None:
        sent: set[str] = set()
        try:
            kept = await KEEPER.fetch(self.kernel_id)
            if kept.messages:
                self.log.info("Sending %d message(s) kept while away to kernel %s's new client",
                              len(kept.messages), self.kernel_id)
            # The keeper's record began before this client subscribed: all of it goes first. If not (the keeper
            # joined the kernel's output just now), it may begin inside the live stream: it waits for the live
            # stream's first message to tell which of it is older (handover.py), or for CATCH_UP seconds of none.
            since_before = kept.since is not None and kept.since < self._connected_at
            pending, last = [Message.read(m) for m in kept.messages], None
            if pending and not since_before:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._held_event.wait(), CATCH_UP)
            if since_before or not self._held:  # (nothing live for CATCH_UP seconds: nothing for it to follow)
                last, pending = self._send_all([m.frames for m in pending], sent), []
            # Catch up with the live stream: wait for its first message, then send what the keeper has between
            # the replay and that message, as it comes (during a flood the keeper may be seconds behind the live
            # stream: it is waited for as long as it makes progress), until the two meet.
            await self._held_event.wait()
            first_id, first = self._held[0]
            first_date = Message.read(first).date
            pending_ids, live, seen = {m.msg_id for m in pending}, set(), 0
            loop = asyncio.get_running_loop()
            deadline, end = loop.time() + CATCH_UP, loop.time() + CATCH_UP_MAX
            # Only while no other client connects: another client's acknowledgements let the keeper
            # drop what it delivered, so the keeper's record could no longer meet the live stream.
            while first_id not in sent and first_id is not None and self._alone():
                after = pending[-1].msg_id if pending else last
                fetched = [m for m in map(Message.read, (await KEEPER.fetch(self.kernel_id, after=after)).messages)
                           if m.msg_id not in sent and m.msg_id not in pending_ids]
                pending += fetched
                pending_ids.update(m.msg_id for m in fetched)
                held = self._held or []
                live.update(msg_id for msg_id, _ in held[seen:])
                seen = len(held)
                count, met = before_live(pending, live, first_date, since_before)
                if count:
                    last = self._send_all([m.frames for m in pending[:count]], sent) or last
                    pending = pending[count:]
                    pending_ids = {m.msg_id for m in pending}
                if met:
                    pending = []
                    break
                if count or fetched:
                    deadline = loop.time() + CATCH_UP
                if loop.time() > min(deadline, end):
                    self.log.warning("kernel keeper still behind kernel %s's live output (no progress for %.0f s, "
                                     "or %.0f s in all); going live", self.kernel_id, CATCH_UP, CATCH_UP_MAX)
                    break
                await asyncio.sleep(0.02)
            # Not met (given up, or another client came): what is known older still goes first; the rest of it
            # comes live, or came before this client subscribed and is lost to it.
            self._send_all([m.frames for m in pending if known_older(m, first_date)], sent)
        except asyncio.CancelledError:
            return
        except Exception:  # noqa: BLE001 - never leave the client without live output
            self.log.exception("Replaying kept output to kernel %s failed; going live", self.kernel_id)
        finally:
            self._go_live(sent)

    def _alone(self) -> bool:
        connections = self.multi_kernel_manager._kernel_connections.get(self.kernel_id, 0)
        return connections - CLOSING.get(self.kernel_id, 0) <= 1

    def _send_all(self, messages: list, sent: set) -> str | None:
        """Send kept messages (runs of stream messages merged) not sent yet; return the last msg_id sent."""
        last = None
        for msg_list, covered in coalesce(self.session, [m for m in messages if msg_id_of(m) not in sent]):
            stream = self.channels.get("iopub")
            if stream is None or stream.closed():
                break
            try:
                self._send_kept(msg_list)
            except WebSocketClosedError:
                break
            ids = [msg_id_of(m) for m in covered]
            sent.update(ids)
            last = ids[-1]
            self._sent(last)
        return last

    def _go_live(self, sent: set) -> None:
        held, self._held = self._held or [], None
        if sent:
            self._replayed = sent
            IOLoop.current().call_later(REPLAYED_FOR, setattr, self, "_replayed", None)
        stream = self.channels.get("iopub")
        for _, msg_list in held:
            if stream is None or stream.closed():
                break
            try:
                self.handle_outgoing_message(stream, msg_list)
            except Exception:  # noqa: BLE001 - one bad message must not lose the ones after it
                self.log.exception("Could not send a message of kernel %s", self.kernel_id)

    # --- closing ---------------------------------------------------------------------------------

    def disconnect(self):
        if self._counted:
            self._counted = False
            clients = CLIENTS.get(self.kernel_id, {})
            clients[self.session_id] = clients.get(self.session_id, 1) - 1
            if clients[self.session_id] <= 0:
                del clients[self.session_id]
            if not clients:
                CLIENTS.pop(self.kernel_id, None)
        if self._replay_task is not None and not self._replay_task.done():
            self._replay_task.cancel()
        self._held = None
        if self._coalescer is not None:
            self._coalescer.drop()
        if self._ack_handle is not None:
            self._ack_handle.cancel()
            self._ack_handle = None
        # Nothing more is acknowledged: what this client was sent after its last pong stays kept.
        if self._forwarding is not None:  # cells the client sent before it left, still on their way to the kernel
            if not self._closing:
                self._closing = True
                CLOSING[self.kernel_id] = CLOSING.get(self.kernel_id, 0) + 1
            for name, stream in self.channels.items():  # nobody reads now
                if stream is not None and not stream.closed():
                    stream.on_recv(None)
                    if name == "iopub":
                        stream.close()
            return None
        if self._closing:
            self._closing = False
            CLOSING[self.kernel_id] -= 1
            if CLOSING[self.kernel_id] <= 0:
                del CLOSING[self.kernel_id]
        self._send_pending()
        return super().disconnect()

    def _send_pending(self) -> None:
        """Hand the ZMQ sockets what the client sent before it left: Jupyter queues each message on its ZMQ stream
        until the loop's next turn, and closing the stream drops the queue. A client that sends cells and closes
        at once (a window closed right after Run All; its frames read in one go) would lose them."""
        for channel, stream in (self.channels or {}).items():
            if stream is None or stream.closed() or not stream.sending():
                continue
            try:
                stream.flush(zmq.POLLOUT)
            except Exception:  # noqa: BLE001 - the close goes on
                self.log.exception("Could not send the last messages of a client of kernel %s (%s)", self.kernel_id,
                                   channel)
            if stream.sending():
                self.log.warning("A message a client sent to kernel %s on %s just before it left was not delivered",
                                 self.kernel_id, channel)
