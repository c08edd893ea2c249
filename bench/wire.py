"""The load worker's WebSocket client (RFC 6455, text frames) and frame decoding.

Lighter than a general client: frames are parsed straight off ``data_received``
and handed to a callback without an intermediate queue or task switch, several
outgoing frames are joined into one ``transport.write``, and masking uses the C
helper from ``websockets``. Server frames from uvicorn are never fragmented, but
continuation frames are handled anyway. ``deflate``: offers ``permessage-deflate``
as browsers do and inflates what the server compressed (it never compresses).
Replies are decoded with msgspec, only the fields the benchmark looks at.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import struct
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

import msgspec
from websockets.speedups import apply_mask

from adapters.tokens import mint
from bench.harness import HOST, SECRET

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
OFFER = "permessage-deflate; client_max_window_bits"  # what browsers send
BODY = "bench message: the quick brown fox jumps over it"
Stage = Callable[..., Awaitable[None]]  # a worker reports a stage, waits for "go"


class EventBody(msgspec.Struct):
    client_msg_id: str = ""
    sender: str = ""


class Incoming(msgspec.Struct):
    type: str
    ref: str | None = ""  # null on an error answering a frame without one
    thread: str = ""
    id: str = ""
    last_id: str = ""
    recovered: bool = False
    event: EventBody | None = None
    code: str = ""
    message: str = ""
    retry_after_ms: int | None = None  # rate_limited
    user: str = ""  # presence
    online: bool = False


DECODE = msgspec.json.Decoder(Incoming).decode


class HandshakeError(Exception):
    """The server did not answer the upgrade with 101 Switching Protocols."""


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    mask = random.randbytes(4)  # unpredictability does not matter for a benchmark
    return header + mask + apply_mask(payload, mask)


class WsClient(asyncio.Protocol):
    """One connection. ``on_message(payload)`` per text message, ``on_batch()`` per read."""

    def __init__(
        self, on_message: Callable[[bytes], None], on_batch: Callable[[], None] | None = None
    ) -> None:
        self.on_message = on_message
        self.on_batch = on_batch
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.fragments: list[bytes] = []
        self.upgraded = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.open = False
        self.key = base64.b64encode(os.urandom(16))
        self.extensions = ""  # what the server negotiated
        self.inflate = zlib.decompressobj(wbits=-15)

    # -- connection -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.upgraded.done():
            self.upgraded.set_exception(exc or ConnectionError("closed during handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def request(self, host: str, port: int, path: str, headers: dict[str, str]) -> None:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {self.key.decode()}",
                 "Sec-WebSocket-Version: 13", *(f"{k}: {v}" for k, v in headers.items())]
        assert self.transport is not None
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def _handshake(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[:end + 4]
        status, *fields = head.split("\r\n")
        accept = base64.b64encode(hashlib.sha1(self.key + GUID).digest()).decode()
        headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
        if " 101 " not in status + " " or headers.get("sec-websocket-accept") != accept:
            self.upgraded.set_exception(HandshakeError(status))
            self.abort()
            return False
        self.open = True
        self.extensions = headers.get("sec-websocket-extensions", "")
        self.upgraded.set_result(None)
        return True

    # -- reading --------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.open and (self.upgraded.done() or not self._handshake()):
            return
        self._frames()
        if self.on_batch is not None:
            self.on_batch()

    def _frames(self) -> None:
        buf, pos, size = self.buffer, 0, len(self.buffer)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, head = b1 & 0x7F, 2
            if n == 126:
                if size - pos < 4:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if b1 & 0x80:
                head += 4  # a masked server frame (not expected; unmasked below)
            if size - pos < head + n:
                break
            payload = bytes(buf[pos + head:pos + head + n])
            if b1 & 0x80:
                payload = apply_mask(payload, bytes(buf[pos + head - 4:pos + head]))
            pos += head + n
            if b0 & 0x40:  # RSV1: compressed (permessage-deflate, never fragmented here)
                payload = self.inflate.decompress(payload + b"\x00\x00\xff\xff")
            self._frame(b0 & 0x80, b0 & 0x0F, payload)
        del buf[:pos]

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            if not fin:
                self.fragments.append(payload)
                return
            if self.fragments:
                payload = b"".join([*self.fragments, payload])
                self.fragments.clear()
            self.on_message(payload)
        elif opcode == OP_PING:
            self._write(_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            if self.open:
                self._write(_frame(OP_CLOSE, payload[:2]))
            self.open = False
            self.abort()

    # -- writing --------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send(self, text: bytes) -> None:
        self._write(_frame(OP_TEXT, text))

    def send_many(self, texts: Iterable[bytes]) -> None:
        self._write(b"".join(_frame(OP_TEXT, t) for t in texts))

    def close(self, code: int = 1000) -> None:
        if self.open:
            self.open = False
            self._write(_frame(OP_CLOSE, struct.pack("!H", code)))
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def connect(
    host: str, port: int, path: str, headers: dict[str, str],
    on_message: Callable[[bytes], None], on_batch: Callable[[], None] | None = None,
    timeout: float = 10.0,
) -> WsClient:
    loop = asyncio.get_running_loop()
    _, client = await asyncio.wait_for(
        loop.create_connection(lambda: WsClient(on_message, on_batch), host, port), timeout)
    client.request(host, port, path, headers)
    try:
        await asyncio.wait_for(asyncio.shield(client.upgraded), timeout)
    except BaseException:
        client.abort()
        raise
    return client


async def open_ws(port: int, user: str, on_message: Callable[[bytes], None],
                  on_batch: Callable[[], None] | None = None, deflate: bool = False,
                  ) -> WsClient:
    """``/v1/ws`` of the server on ``port``, as ``user`` (a token signed with SECRET)."""
    headers = {"Authorization": f"Bearer {mint(user, SECRET, 3600)}"}
    if deflate:
        headers["Sec-WebSocket-Extensions"] = OFFER
    return await connect(HOST, port, "/v1/ws", headers, on_message, on_batch)


async def bounded(jobs: Sequence[Callable[[], Awaitable[Any]]], limit: int,
                  timeout: float) -> list[Any]:
    """Run ``jobs`` with at most ``limit`` at a time; all must finish within ``timeout``."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return await asyncio.wait_for(asyncio.gather(*(one(j) for j in jobs)), timeout)
