"""Many sockets at once: more concurrent commands than Redis connections in the pool."""

from __future__ import annotations

import asyncio

from tests.support import Client, uid


async def test_150_sockets_sending_at_once_are_all_acked(start_gateway):
    """More sockets than pooled connections: every hello and ack comes, none times out."""
    gateway = start_gateway(DUOLOGUE_REDIS_POOL="4")
    users = [uid("u") for _ in range(150)]
    clients = await asyncio.gather(*(Client.connect(gateway.ws_url, u) for u in users))
    peers = users[1:] + users[:1]
    answers = await asyncio.gather(*(c.say(p, "together") for c, p in zip(clients, peers,
                                                                            strict=True)))
    syncs = [c.send({"type": "sync", "thread": a["thread"], "after": "0"})
             for c, a in zip(clients, answers, strict=True)]
    await asyncio.gather(*syncs)
    synced = await asyncio.gather(*(c.next("synced") for c in clients))
    assert all(s["recovered"] for s in synced)
    assert [a["type"] for a in answers] == ["ack"] * 150, [a for a in answers if
                                                           a["type"] != "ack"][:3]
    await asyncio.gather(*(c.close() for c in clients))
