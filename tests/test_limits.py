"""Per-user limits that hold across gateways (protocol.md section 8). Two real gateway
processes on one Redis; each test turns on the limit it attacks (tests/conftest.py starts
gateways with them off)."""

from __future__ import annotations

import asyncio

from gateway.connection import Connection
from tests.support import Client, thread_of, uid


async def _typings(client: Client, thread: str) -> int:
    return len([f for f in client.frames if f.get("type") == "typing" and
                f.get("thread") == thread])


async def test_typing_is_relayed_once_per_user_and_thread_every_2_s_across_gateways(
        start_gateway):
    """Attacks: a typing flood relayed whole (a victim's sockets fill and close with
    1013), a throttle per gateway process (two sockets on two gateways double it), or per
    thread only (the other participant's typing swallowed)."""
    env = {"DUOLOGUE_TYPING_EVERY": "2"}
    one, two = start_gateway(**env), start_gateway(**env)
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a1 = await Client.connect(one.ws_url, alice)
    a2 = await Client.connect(two.ws_url, alice)
    b = await Client.connect(one.ws_url, bob)
    try:
        for _ in range(20):
            await a1.send({"type": "typing", "thread": thread})
            await a2.send({"type": "typing", "thread": thread})
        await b.next("typing", thread=thread, user=alice)
        await b.send({"type": "typing", "thread": thread})  # bob's own is not alice's
        await a1.next("typing", thread=thread, user=bob)
        await b.say(alice, "marker")  # after it, every typing relayed so far has arrived
        await a1.next("event", thread=thread)
        assert await _typings(b, thread) == 0  # next() took the one relayed
        await asyncio.sleep(2.1)
        await a2.send({"type": "typing", "thread": thread})
        await b.next("typing", thread=thread, user=alice)
        assert not [f for f in a1.frames + a2.frames if f.get("type") == "error"]
    finally:
        for client in (a1, a2, b):
            await client.close()


async def test_typing_never_closes_a_receiver_whose_queue_is_filling():
    """Attacks: typing frames counted as frames a slow receiver must take (protocol.md
    section 8: a receiver is never closed for typing), and events dropped instead."""
    conn = Connection("bob", capacity=8)
    for _ in range(100):
        conn.push_droppable('{"type":"typing"}')
    assert conn.close_code is None and len(conn.frames) == 4  # up to half the queue
    for n in range(4):
        conn.push(f'{{"type":"event","n":{n}}}')  # events still have the other half
    assert conn.close_code is None and len(conn.frames) == 8
