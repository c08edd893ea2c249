"""Faults heal without an operator and lose no acked event."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from adapters.record import Keys
from tests.support import Client, blast_acked, strictly_increasing, thread_of, uid


async def test_pubsub_connection_killed_mid_traffic_leaves_no_gap(private_redis, start_gateway):
    gateway = start_gateway(REDIS_URL=private_redis.url)
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a = await Client.connect(gateway.ws_url, alice)
    b = await Client.connect(gateway.ws_url, bob)
    admin = aioredis.Redis.from_url(private_redis.url)
    sending = asyncio.create_task(blast_acked(b, alice, 3000, "k"))
    kills = 0
    while not sending.done() and kills < 5:
        await asyncio.sleep(0.1)
        kills += await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    acks = await sending
    assert kills >= 1
    ids = [ack["id"] for ack in acks]
    for client in (a, b):
        await client.wait_for(lambda f: f.get("type") == "event" and f["id"] == ids[-1], 30)
        got = [f["id"] for f in client.events(thread)] + [ids[-1]]
        assert got == ids, (len(got), len(ids))
    await admin.aclose()
    await a.close()
    await b.close()


async def test_redis_stopped_and_restarted(private_redis, start_gateway, prefix):
    gateway = start_gateway(REDIS_URL=private_redis.url)
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a = await Client.connect(gateway.ws_url, alice)
    b = await Client.connect(gateway.ws_url, bob)
    before = await a.say(bob, "before")
    assert before["type"] == "ack"
    private_redis.stop()
    down = await a.say(bob, "while down", client_msg_id="down-1")
    assert down["type"] == "error" and down["code"] == "unavailable" and down["ref"] == "down-1"
    private_redis.start()
    for _ in range(50):  # the first attempts may still find the old connections dead
        retried = await a.say(bob, "while down", client_msg_id="down-1")
        if retried["type"] == "ack":
            break
        await asyncio.sleep(0.1)
    assert retried["type"] == "ack" and retried["duplicate"] is False
    after = await a.say(bob, "after")
    for client in (a, b):
        await client.wait_for(lambda f: f.get("type") == "event" and f["id"] == after["id"], 20)
    admin = aioredis.Redis.from_url(private_redis.url)
    stored = [i.decode() for i, _ in await admin.xrange(Keys(prefix).stream(thread))]
    assert stored == [before["id"], retried["id"], after["id"]]  # nothing half-written
    got = [f["id"] for f in b.events(thread)] + [after["id"]]
    assert got == stored and strictly_increasing(got)
    fresh = await Client.connect(gateway.ws_url, alice)
    assert fresh.hello["threads"][0]["last_id"] == after["id"]
    await admin.aclose()
    for client in (a, b, fresh):
        await client.close()


async def test_sigterm_drains_in_flight_commands_and_closes_with_1001(
        start_gateway, aredis, prefix):
    gateway = start_gateway()
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a = await Client.connect(gateway.ws_url, alice)
    b = await Client.connect(gateway.ws_url, bob)
    for n in range(300):
        await a.send({"type": "send", "to": bob, "body": "x", "client_msg_id": f"t-{n}"})
    gateway.process.send_signal(15)
    assert await a.wait_closed(15) == 1001
    assert await b.wait_closed(15) == 1001
    # uvicorn re-raises SIGTERM once shut down gracefully: exit by that signal (143)
    assert await asyncio.to_thread(gateway.process.wait, 20) in (0, -15)
    acked = {f["id"] for f in a.frames if f["type"] == "ack"}
    stored = {i.decode() for i, _ in await aredis.xrange(Keys(prefix).stream(thread))}
    assert stored == acked  # every append that happened was acked before the close
    assert '"drained"' in gateway.log() and "Application shutdown complete" in gateway.log()
