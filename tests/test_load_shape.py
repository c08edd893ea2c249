"""Many sockets at once: more concurrent commands than Redis connections in the pool."""

from __future__ import annotations

import asyncio

from tests.support import Client, uid


async def test_150_sockets_sending_at_once_are_all_acked(start_gateway):
    gateway = start_gateway(DUOLOGUE_REDIS_POOL="16")
    users = [uid("u") for _ in range(150)]
    clients = await asyncio.gather(*(Client.connect(gateway.ws_url, u) for u in users))
    peers = users[1:] + users[:1]
    answers = await asyncio.gather(*(c.say(p, "together") for c, p in zip(clients, peers,
                                                                            strict=True)))
    assert [a["type"] for a in answers] == ["ack"] * 150, [a for a in answers if
                                                           a["type"] != "ack"][:3]
    await asyncio.gather(*(c.close() for c in clients))
