"""The WebSocket protocol under uvicorn, with the server's ``permessage-deflate`` policy.

Browsers always offer ``permessage-deflate``. Kept between messages ("context
takeover"), a socket's zlib streams cost tens of KiB even while it is idle, which is
most of a chat server's sockets' lives. ``DUOLOGUE_WS_COMPRESSION`` chooses:

- ``per-message`` (default): compress each message on its own (no context takeover
  either way), so an idle socket keeps no zlib state at all; messages under ``SMALL``
  bytes (most chat frames) go out uncompressed, which RFC 7692 allows: inflating a
  200-byte frame cost a Node client about 25 us and saved a few dozen bytes (the
  ``client_catchup`` figure, docs/benchmarks.md: 1,152 ms -> 189 ms);
- ``context``: uvicorn's own setting, context kept with 4 KiB windows (``max_window_bits``
  12) and ``memLevel`` 5: smaller frames for long conversations, more memory per socket;
- ``off``: never negotiate compression.

The figures behind the default are in docs/benchmarks.md ("permessage-deflate").

The protocol also offers the ASGI extension ``duologue.text_frames``, whose ``writer``
(a ``FrameWriter``, the protocol itself) writes a connection's queued text frames with
one ``write()`` straight from the event loop's callback, and closes the socket, without
the ASGI ``send`` coroutines in between. A connection then needs no sender task of its
own: its pushes schedule one flush per loop iteration (``gateway.connection``), so under
load one write carries an ack and the events queued with it (docs/benchmarks.md, "Issue
13"). A frame that needs no deflate is framed here directly (RFC 6455 section 5.2: FIN,
opcode text, the length, the payload; a server does not mask).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.exceptions import InvalidState, WebSocketException
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from gateway.lean import Flag, Inbox

WINDOW_BITS, MEM_LEVEL = 12, 5
SMALL = 256  # bytes: a message this short goes out uncompressed under ``per-message``
STALLED_CLOSE = 30.0  # seconds after our close frame a write buffer may stand still
TEXT_FRAMES = "duologue.text_frames"  # the ASGI extension: a FrameWriter, one write a flush
# Per-socket lines of uvicorn ("[accepted]") and of websockets ("connection open",
# "connection rejected (429 …)", "connection closed") are INFO: a logger at WARNING skips
# them before a record is made (~10 % of a handshake's CPU when made and then filtered;
# and a refused handshake must not write a line each, gateway.log_throttle). Errors and
# exceptions still reach the log.
SOCKET_LOG = logging.getLogger("duologue.ws.server")
SOCKET_LOG.setLevel(logging.WARNING)


class FrameWriter(Protocol):
    """What ``duologue.text_frames`` offers a connection (our protocol, below)."""

    on_resume: Callable[[], None] | None
    broke_protocol: bool

    def write_now(self, frames: list[str], force: bool = False) -> bool: ...

    def close_now(self, code: int, reason: str) -> None: ...


class SmallFramesPlain(PerMessageDeflate):
    """Per-message deflate that sends short text messages as they are (RFC 7692 lets
    either side send any message uncompressed; with no context takeover nothing else
    changes). A chat's frames are mostly 100-300 bytes: deflating one saves a few dozen
    bytes and costs both ends a zlib stream set up and torn down."""

    plain_below = SMALL  # bytes: ``framed`` sends shorter text frames plain too

    def encode(self, frame: Frame) -> Frame:
        if frame.opcode is Opcode.TEXT and frame.fin and len(frame.data) < self.plain_below:
            return frame
        return super().encode(frame)


class PerMessageFactory(ServerPerMessageDeflateFactory):
    def process_request_params(self, params: Any, accepted: Any) -> Any:
        response, extension = super().process_request_params(params, accepted)
        if isinstance(extension, PerMessageDeflate) and extension.local_no_context_takeover:
            extension.__class__ = SmallFramesPlain  # same state, one method more
        return response, extension


def extensions(policy: str) -> list[ServerExtensionFactory]:
    if policy == "off":
        return []
    per_message = policy == "per-message"
    factory = PerMessageFactory if per_message else ServerPerMessageDeflateFactory
    return [factory(
        server_no_context_takeover=per_message, client_no_context_takeover=per_message,
        server_max_window_bits=WINDOW_BITS, client_max_window_bits=WINDOW_BITS,
        compress_settings={"memLevel": MEM_LEVEL})]


class DuologueProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol with our deflate policy, lean waiting
    primitives, and the ``duologue.text_frames`` writer (``protocol_class``)."""

    policy = "per-message"
    closing_since = 0.0  # loop time our close frame was written (close_now)
    closing_left = -1  # the write buffer's size at the last look after it
    on_resume: Callable[[], None] | None = None  # FrameWriter: called when writable again
    broke_protocol = False  # the peer sent what the parser refused (closed: 1009, 1002...)

    def __init__(self, config: Config, server_state: ServerState,
                 app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.logger = SOCKET_LOG
        # uvicorn's ServerProtocol with our deflate policy and logger (a second one
        # would cost a uuid4, a system call, per handshake)
        self.conn.available_extensions = extensions(self.policy)
        self.conn.logger, self.conn.debug = SOCKET_LOG, False
        # the same calls, without asyncio's deques (gateway.lean): 3.8 KiB a socket
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag(True)  # type: ignore[assignment]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:  # a refused upgrade has no scope
            self.scope["extensions"][TEXT_FRAMES] = {"writer": self}

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # Answered: the parsed upgrade request and our response are never
            # read again. Their headers cost ~3 KiB a socket; websockets' parser
            # keeps the request for the socket's life (a local of its generator),
            # so its headers are emptied rather than only let go.
            self.request.headers.clear()
            del self.request, self.response

    def write_now(self, frames: list[str], force: bool = False) -> bool:
        """``frames`` written with one ``write()``; False (nothing written) while the
        transport asks us to pause, unless ``force`` (the last frames before a close):
        ``on_resume`` is called when it has room again."""
        if self.disconnected or self.close_sent or not self.handshake_complete:
            raise ClientDisconnected()
        if not force and not self.writable.is_set():
            return False
        self.transport.write(framed(self.conn, frames))
        return True

    def close_now(self, code: int, reason: str) -> None:
        """Start the closing handshake, as uvicorn does for ``websocket.close``: the
        application's ``receive`` gets the disconnect; the transport closes when the
        peer answers, or after ``close_timeout``."""
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code,
                               "reason": reason})
        try:
            self.conn.send_close(code, reason)
        except WebSocketException:  # not open any more, or a code a close cannot carry
            return
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.closing_since, self.closing_left = self.loop.time(), -1
        self.close_timer = self.loop.call_later(self.close_timeout, self._close_transport)

    def _close_transport(self) -> None:
        """``close_timeout`` after our close frame, the peer has not answered it. An
        empty write buffer: close (as uvicorn does). A buffer still draining: wait on.
        A buffer that has not moved for a whole wait, ``STALLED_CLOSE`` seconds after
        the close: abort. ``transport.close()`` waits for the buffer to drain, so a
        slow consumer that never reads again (the 1013 case) would hold its socket and
        buffer for good."""
        left = self.transport.get_write_buffer_size()
        if not left:
            self.transport.close()
        elif (left == self.closing_left
              and self.loop.time() - self.closing_since >= STALLED_CLOSE):
            self.transport.abort()
        else:
            self.closing_left = left
            self.close_timer = self.loop.call_later(self.close_timeout,
                                                    self._close_transport)

    def handle_parser_exception(self) -> None:
        self.broke_protocol = True
        super().handle_parser_exception()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.on_resume is not None:
            self.on_resume()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.on_resume = None


def protocol_class(policy: str) -> type[asyncio.Protocol]:
    """Our protocol negotiating deflate as ``policy`` says."""
    return type("DeflatePolicyProtocol", (DuologueProtocol,), {"policy": policy})


def framed(conn: ServerProtocol, frames: list[str]) -> bytes:
    """``frames`` as text frames on the wire, in order: framed here when no deflate
    applies to them, by the websockets protocol (its extensions) otherwise."""
    if conn.state is not State.OPEN:
        raise ClientDisconnected()
    extensions = conn.extensions  # none, or the one deflate extension negotiated
    plain_below = getattr(extensions[0], "plain_below", 0) if extensions else 1 << 63
    out: list[bytes] = []
    try:
        for text in frames:
            data = text.encode()
            if len(data) < plain_below:
                out.append(text_header(len(data)))
                out.append(data)
            else:
                conn.send_text(data)
                out.extend(conn.data_to_send())
    except InvalidState:
        raise ClientDisconnected() from None
    return b"".join(out)


def text_header(length: int) -> bytes:
    """A server's header of one whole text frame (RFC 6455 section 5.2)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return bytes((0x81, 126)) + length.to_bytes(2, "big")
    return bytes((0x81, 127)) + length.to_bytes(8, "big")
