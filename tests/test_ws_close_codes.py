"""protocol.md section 2, close codes and liveness: 1009 frame too large, 1008 policy
(refusals, token expiry), 1013 slow consumer, unanswered pings.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
import time
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.support import Client, token, uid
from tests.ws_errors_support import (
    MAX_FRAME,
    assert_error,
    assert_usable,
    opened,
    padded,
    send_raw,
    settle,
)

# -- close 1009 ---------------------------------------------------------------------------


@pytest.mark.parametrize("fill", ["x", "é", "😀", "binary"])
async def test_frame_over_64k_closes_with_1009(shared_gateway, fill):
    """64 KiB counts bytes of UTF-8, not characters; binary frames too."""
    alice, bob = uid("a"), uid("b")
    async with opened(shared_gateway.ws_url, alice, bob) as (a, b):
        command = {"type": "send", "to": bob, "body": "big", "client_msg_id": "big-1"}
        if fill == "binary":
            await a.ws.send(padded(command, MAX_FRAME + 1).encode())
        else:
            await a.ws.send(padded(command, MAX_FRAME + 1, fill))
        assert await a.wait_closed(5) == 1009
        await settle()
        assert b.events() == []
    async with opened(shared_gateway.ws_url, alice) as (a,):  # nothing had been appended
        ack = await a.say(bob, "big", client_msg_id="big-1")
        assert ack["type"] == "ack" and ack["duplicate"] is False


async def test_fragmented_message_over_64k_closes_with_1009(shared_gateway):
    alice, bob = uid("a"), uid("b")
    async with opened(shared_gateway.ws_url, alice) as (a,):
        text = padded({"type": "send", "to": bob, "body": "x", "client_msg_id": "frag"},
                      MAX_FRAME + 4096)
        await a.ws.send(iter([text[i:i + 8192] for i in range(0, len(text), 8192)]))
        assert await a.wait_closed(5) == 1009


@pytest.mark.parametrize(("size", "fill"), [(MAX_FRAME, "x"), (MAX_FRAME, "é"),
                                            (MAX_FRAME - 1, "x"), (MAX_FRAME - 100, "😀")])
async def test_frame_at_or_under_64k_is_not_closed(shared_gateway, size, fill):
    alice, bob = uid("a"), uid("b")
    async with opened(shared_gateway.ws_url, alice) as (a,):
        command = {"type": "send", "to": bob, "body": "fits", "client_msg_id": f"fit-{size}"}
        await a.ws.send(padded(command, size, fill))
        answer = await a.wait_for(lambda f: f.get("ref") == f"fit-{size}", 5)
        assert answer["type"] == "ack", answer
        # a body over max_body inside a frame under the limit: refused, not closed
        await a.ws.send(padded({**command, "body": "y" * 4001, "client_msg_id": "long"}, size,
                               fill))
        assert_error(await a.next("error", timeout=5), "invalid", "long")
        await assert_usable(a, bob)


# -- close 1008 ---------------------------------------------------------------------------


async def _refuse(client: Client, n: int) -> dict[str, Any]:
    """One bad_frame, unknown_type or invalid refusal, in turn."""
    frames: list[Any] = ["{not json", {"type": "nope"},
                         {"type": "send", "to": "no one", "body": "x", "client_msg_id": f"r{n}"}]
    await send_raw(client, frames[n % 3])
    return await client.next("error", timeout=5)


async def test_more_than_20_refusals_close_with_1008(shared_gateway):
    alice, bob = uid("a"), uid("b")
    async with opened(shared_gateway.ws_url, alice) as (a,):
        codes = [(await _refuse(a, n))["code"] for n in range(20)]
        assert set(codes) == {"bad_frame", "unknown_type", "invalid"}
        await settle(0.2)
        assert not a.reader.done(), "closed after only 20 refusals"
        await assert_usable(a, bob)
        await send_raw(a, "{still not json")
        assert await a.wait_closed(5) == 1008
    async with opened(shared_gateway.ws_url, alice) as (again,):  # a new socket starts afresh
        assert (await _refuse(again, 0))["code"] == "bad_frame"
        await assert_usable(again, bob)


async def test_token_expiring_while_connected_closes_with_1008(shared_gateway):
    alice, bob = uid("a"), uid("b")
    earliest_exp = int(time.time()) + 2
    async with opened(shared_gateway.ws_url, alice, bob, ttl=2) as (a, b):
        latest_exp = int(time.time()) + 2
        await assert_usable(a, bob)
        # the other connection refreshes its token and outlives the first one's exp
        await b.send({"type": "refresh", "token": token(bob, 3600)})
        assert (await b.next("refreshed", timeout=5))["exp"] >= latest_exp + 3000
        code = await a.wait_closed(latest_exp + 6 - time.time())
        closed_at = time.time()
        assert code == 1008
        assert earliest_exp - 0.5 <= closed_at <= latest_exp + 5, (closed_at, latest_exp)
        await asyncio.sleep(max(0.0, latest_exp + 1.5 - time.time()))
        assert not b.reader.done(), "a refreshed connection was closed"
        await assert_usable(b, alice)


# -- close 1013 ---------------------------------------------------------------------------


async def test_slow_consumer_closed_with_1013(start_gateway):
    """A reader that stops reading is closed with 1013 once its queue overflows; the
    others on its gateway are served on. The sender writes from a second gateway with the
    default queue: its own copies of 10 MB of events, on a queue of 16, would make it a
    slow consumer too whenever this machine is slow to read them."""
    gateway, other = start_gateway(DUOLOGUE_OUTBOX="16"), start_gateway()
    slow, sender = uid("s"), uid("f")
    stalled = await websockets.connect(
        gateway.ws_url, additional_headers={"Authorization": f"Bearer {token(slow)}"},
        max_queue=1, max_size=2**24, compression=None)  # raw bytes: real backpressure
    try:
        async with opened(other.ws_url, sender) as (f,):
            body = base64.b85encode(os.urandom(3200)).decode()  # 4000 chars, incompressible
            window, total = 8, 2500  # 10 MB: more than socket buffers hold
            for start in range(0, total, window):
                refs = [f"m{n}" for n in range(start, min(start + window, total))]
                for ref in refs:
                    await f.send({"type": "send", "to": slow, "body": body,
                                  "client_msg_id": ref})
                for ref in refs:
                    answer = await f.wait_for(
                        lambda fr, r=ref: fr.get("ref") == r and fr.get("type") in ("ack", "error"),
                        10)
                    assert answer["type"] == "ack", answer
                f.frames = [fr for fr in f.frames if fr.get("type") != "event"]
            # the sender's own connection is healthy, and so is a bystander beside the
            # stalled reader on its gateway
            assert not f.reader.done(), f.ws.close_code
            ack = await f.say(sender, "I am fine")
            assert ack["type"] == "ack"
            await f.next("event", id=ack["id"], timeout=5)
            bystander = uid("b")
            async with opened(gateway.ws_url, bystander) as (b,):
                ack = await b.say(bystander, "me too")
                assert ack["type"] == "ack"
                await b.next("event", id=ack["id"], timeout=5)
        # the stalled reader now reads what was buffered, then finds the socket closed
        received = 0
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(20):
                while True:
                    await stalled.recv()
                    received += 1
        assert info.value.rcvd is not None and info.value.rcvd.code == 1013, (info.value, received)
        assert stalled.close_code == 1013
        assert received < total  # it was cut off, not served everything
    finally:
        await stalled.close()


# -- liveness -----------------------------------------------------------------------------


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of unmasked server frames in ``data`` (complete ones only)."""
    out, i = [], 0
    while i + 2 <= len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if length == 126:
            (length,) = struct.unpack("!H", data[i:i + 2])
            i += 2
        elif length == 127:
            (length,) = struct.unpack("!Q", data[i:i + 8])
            i += 8
        if i + length > len(data):
            break
        out.append((opcode, data[i:i + length]))
        i += length
    return out


async def test_unanswered_pings_disconnect(start_gateway):
    gateway = start_gateway(DUOLOGUE_PING_INTERVAL="0.5")
    deaf, alive = uid("d"), uid("l")
    async with opened(gateway.ws_url, alive) as (normal,):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token(deaf)}\r\n\r\n"
                .encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 101"), head
            opened_at = time.monotonic()
            data = b""
            async with asyncio.timeout(6):  # never write again: no pong, ever
                while chunk := await reader.read(65536):
                    data += chunk
            elapsed = time.monotonic() - opened_at
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        opcodes = [op for op, _ in _frames(data)]
        assert 0x9 in opcodes, opcodes  # it was pinged
        assert 0.4 <= elapsed <= 5, elapsed
        # a client that answers pings stays open over the same period and beyond
        await asyncio.sleep(max(0.0, 3 - elapsed))
        assert not normal.reader.done(), normal.ws.close_code
        await assert_usable(normal, deaf)
