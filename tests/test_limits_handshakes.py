"""A client that breaks the protocol and reconnects in a loop (protocol.md sections 2 and
8; docs/protocol-notes.md, "Limits"): the socket it broke keeps its place in the user's
socket cap for ``DUOLOGUE_VIOLATION_HOLD`` seconds, across gateways; and a handshake whose
refusal is already known here is answered while still an HTTP request, with the same 429
the endpoint gives. Real gateway processes on one Redis."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import websockets

from tests.support import Client, handshake_refusal, token, uid
from tests.ws_errors_support import MAX_FRAME, padded


async def _handshake(url: str, user: str) -> websockets.InvalidStatus | None:
    """The refusal of a handshake of ``user`` (None: accepted, and closed again)."""
    return await handshake_refusal(url, token(user))


async def _break_protocol(url: str, user: str) -> None:
    """A socket of ``user`` closed by the gateway for a frame over the size limit."""
    client = await Client.connect(url, user)
    await client.ws.send(padded({"type": "send", "to": user, "body": "x",
                                 "client_msg_id": "big"}, MAX_FRAME + 1))
    assert await client.wait_closed(5) == 1009


async def _raw_upgrade(port: int, target: bytes) -> bytes:
    """The status line answering a hand-written upgrade request for ``target``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")
    try:
        return await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()


def _refusals(metrics: str) -> dict[tuple[str, str], float]:
    found = re.findall(r'^duologue_ws_refused_total\{reason="(\w+)",where="(\w+)"\} (\S+)$',
                       metrics, re.M)
    return {(reason, where): float(n) for reason, where, n in found}


async def test_a_socket_closed_for_breaking_the_protocol_again_keeps_its_place_a_while(
        start_gateway):
    """Attacks: a client looping "oversized frame, closed 1009, reconnect" costs a
    handshake, a hello and a close each time, for as long as it likes (the hostile
    benchmark's attacker: ~30 a second, the other users' delivery p99 4x); or the hold
    applied to a first break (a client that reconnects once after it), to sockets that
    broke nothing, to other users, to one gateway only, or never ending."""
    env = {"DUOLOGUE_MAX_SOCKETS": "3", "DUOLOGUE_VIOLATION_HOLD": "4"}
    one, two = start_gateway(**env), start_gateway(**env)
    alice, bob = uid("a"), uid("b")
    for _ in range(3):  # a closed socket's place is given back once the server sees the close
        assert await _handshake(one.ws_url, alice) is None
        await asyncio.sleep(0.3)
    await _break_protocol(one.ws_url, alice)  # the first break: forgiven
    await asyncio.sleep(0.3)  # long enough for a place given back at once to be back
    opened = [await Client.connect(url, alice) for url in (one.ws_url, two.ws_url, one.ws_url)]
    for client in opened:
        await client.close()
    await asyncio.sleep(0.3)
    await _break_protocol(one.ws_url, alice)  # again within the hold: its place is held
    await _break_protocol(one.ws_url, alice)  # and again: two held
    await asyncio.sleep(0.3)
    refused = await _handshake(two.ws_url, alice)  # two held and one open: full
    await asyncio.sleep(0.3)  # its place is written back
    kept = await Client.connect(two.ws_url, alice)
    try:
        assert refused is None
        refused = await _handshake(one.ws_url, alice)
        assert refused is not None and refused.response.status_code == 429
        assert refused.response.headers["Retry-After"] == "1"
        await asyncio.sleep(0.3)  # the other gateway counts the held places too
        refused = await _handshake(two.ws_url, alice)
        assert refused is not None and refused.response.status_code == 429
        assert await _handshake(one.ws_url, bob) is None  # only alice's places
        deadline = asyncio.get_running_loop().time() + 8
        extra: list[Client] = []
        while len(extra) < 2:  # the holds end (4 s after the breaks): both places back
            assert asyncio.get_running_loop().time() < deadline, "the held places stay held"
            if await _handshake(one.ws_url, alice) is None:
                await asyncio.sleep(0.3)
                extra = [await Client.connect(one.ws_url, alice),
                         await Client.connect(two.ws_url, alice)]
            else:
                await asyncio.sleep(0.2)
        assert (await kept.say(bob, "usable"))["type"] == "ack"
        for client in extra:
            await client.close()
    finally:
        await kept.close()


async def test_a_socket_closed_for_too_many_refused_frames_counts_as_a_break(start_gateway):
    """Attacks: the hold applied to a 1009 only, not to the other close for breaking the
    protocol (more than 20 invalid frames in a minute: 1008); or to a 1008 for an expired
    token, which breaks nothing."""
    gateway = start_gateway(DUOLOGUE_MAX_SOCKETS="1", DUOLOGUE_VIOLATION_HOLD="30")
    alice, bob = uid("a"), uid("b")
    client = await Client.connect(gateway.ws_url, alice, ttl=2)  # its token expires: 1008
    assert await client.wait_closed(10) == 1008
    await asyncio.sleep(0.3)
    await _break_protocol(gateway.ws_url, alice)  # a first break: forgiven, no hold
    await asyncio.sleep(0.3)  # long enough for a place given back at once to be back
    client = await Client.connect(gateway.ws_url, alice)
    for n in range(21):
        await client.send({"type": "send", "to": "NOT A USER", "body": "x",
                           "client_msg_id": f"c-{n}"})
    assert await client.wait_closed(5) == 1008  # a second break: held
    await asyncio.sleep(0.3)
    refused = await _handshake(gateway.ws_url, alice)
    assert refused is not None and refused.response.status_code == 429
    assert await _handshake(gateway.ws_url, bob) is None


async def test_a_handshake_refused_before_the_upgrade_is_the_endpoints_answer(
        start_gateway):
    """Attacks: a screen that answers differently from the endpoint (status, headers,
    body), refuses what the endpoint would accept (another user; a read budget off; a
    bad token, which the endpoint refuses with 403, not 429), or never screens at all (a
    client retrying a refused handshake in a loop costs the whole upgrade path each time).
    """
    gateway = start_gateway(DUOLOGUE_READ_RATE="0.1", DUOLOGUE_READ_BURST="1")
    alice, bob = uid("a"), uid("b")
    client = await Client.connect(gateway.ws_url, alice)  # the hello takes alice's token
    try:
        first = await _handshake(gateway.ws_url, alice)  # Redis says no: the endpoint
        second = await _handshake(gateway.ws_url, alice)  # known refused: the screen
        assert first is not None and second is not None
        async with httpx.AsyncClient() as http:
            counts = _refusals((await http.get(f"{gateway.http_url}/metrics")).text)
        assert counts[("read_budget", "endpoint")] == 1
        assert counts[("read_budget", "upgrade")] == 1
        # the same answer but for the date and the wait left (a few ms less)
        answers = [(r.response.status_code, sorted((k.lower(), v) for k, v in
                                                   r.response.headers.raw_items()
                                                   if k.lower() not in ("date",
                                                                        "content-length")),
                    re.sub(rb"\d+ ms", b"N ms", r.response.body)) for r in (first, second)]
        assert answers[0][0] == 429 and answers[0][2] == answers[1][2]
        assert answers[0] == answers[1]
        assert all(int(r.response.headers["Content-Length"]) == len(r.response.body)
                   for r in (first, second))
        assert b'"code":"rate_limited"' in answers[1][2]
        assert await _handshake(gateway.ws_url, bob) is None  # bob's budget is his own
        # the token the endpoint reads: the header's, before the query's
        carol = uid("c")
        both = await websockets.connect(f"{gateway.ws_url}?token={token(alice)}",
                                        additional_headers={"Authorization":
                                                            f"Bearer {token(carol)}"})
        assert json.loads(await both.recv())["user"] == carol
        await both.close()
        # an upgrade the screen cannot read (no path) is answered, as before, not dropped
        assert (await _raw_upgrade(gateway.port, b"http://127.0.0.1")).startswith(b"HTTP/1.1 ")
        forged = token(alice, secret="another-secret-" + "y" * 32)  # claims alice
        for bad in ("not-a-token", forged):  # the screen verifies before it refuses
            refused = await handshake_refusal(gateway.ws_url, bad)
            assert refused is not None and refused.response.status_code == 403
        # alice's own socket still works, and her sends have their own budget
        assert (await client.say(bob, "still here"))["type"] == "ack"
    finally:
        await client.close()
