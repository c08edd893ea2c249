"""protocol.md section 2, guarantee 3 under faults: a sync refused or cut mid-replay, a
client vanishing during a replay, Redis full, pub/sub dying during syncs, SIGTERM during
a sync.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
import redis.asyncio as aioredis
import websockets

from adapters.record import Keys
from gateway.store import PAGE_LUA
from schemas.events import MessageSent, encode_event
from tests.faults_support import numsub, proxied_gateway, say_until_acked, wait_numsub
from tests.support import Client, blast, id_key, seen, sent, thread_of, token, uid

# -- a sync that fails must not stop live delivery of its thread --------------------------

PAGE_SHA = hashlib.sha1(PAGE_LUA.encode()).hexdigest().encode()  # replays read pages by SHA


@pytest.mark.single_redis  # a TCP proxy in front of one server: a cluster client goes around it
async def test_sync_refused_unavailable_still_delivers_later_live_events(
        start_gateway, redis_url):
    """After a `sync` refused `unavailable`, later live events of its thread arrive, once each."""
    async with proxied_gateway(start_gateway, redis_url) as (gateway, proxy):
        alice, bob = uid("a"), uid("b")
        thread = thread_of(alice, bob)
        a = await Client.connect(gateway.ws_url, alice)
        b = await Client.connect(gateway.ws_url, bob)
        before = await b.say(alice, "before")
        await a.next("event", id=before["id"])
        proxy.trip(lambda data: PAGE_SHA in data)  # the replay's first read
        await a.send({"type": "sync", "thread": thread, "after": before["id"]})
        refused = await a.next("error")
        assert refused["code"] == "unavailable", refused
        assert proxy.tripped.is_set()
        proxy.heal()
        after = await say_until_acked(b, alice, "after")
        arrived = await a.wait_for(
            lambda f: f.get("type") == "event" and f["id"] == after["id"], timeout=5)
        assert arrived["event"]["body"] == "after"
        await a.close()
        await b.close()


@pytest.mark.single_redis  # a TCP proxy in front of one server: a cluster client goes around it
async def test_sync_failing_mid_replay_still_delivers_the_rest_and_later_live_events(
        start_gateway, redis_url):
    """Redis failing between two replay chunks leaves no gap; later live events still arrive."""
    async with proxied_gateway(start_gateway, redis_url) as (gateway, proxy):
        alice, bob = uid("a"), uid("b")
        thread = thread_of(alice, bob)
        b = await Client.connect(gateway.ws_url, bob)
        for n in range(0, 600, 50):  # more than one replay chunk (500)
            for i in range(n, n + 50):
                await b.send({"type": "send", "to": alice, "body": f"m{i}",
                              "client_msg_id": f"m{i}"})
            await b.wait_for(lambda f, r=f"m{n + 49}": f.get("ref") == r, 20)
        a = await Client.connect(gateway.ws_url, alice)
        proxy.trip(lambda data: PAGE_SHA in data and b"\r\n(" in data)  # a later page
        await a.send({"type": "sync", "thread": thread, "after": "0"})
        refused = await a.next("error", timeout=20)
        assert refused["code"] == "unavailable", refused
        assert proxy.tripped.is_set()
        assert len(a.events(thread)) == 500  # the first chunk was delivered
        proxy.heal()
        after = await say_until_acked(b, alice, "after")
        arrived = await a.wait_for(
            lambda f: f.get("type") == "event" and f["id"] == after["id"], timeout=5)
        assert arrived["event"]["body"] == "after"
        await a.close()
        await b.close()


async def test_client_vanishing_during_a_paced_replay_is_released(
        start_gateway, aredis, prefix):
    """A client gone while its replay waits for room is closed and its channel released."""
    gateway = start_gateway(DUOLOGUE_OUTBOX="16", DUOLOGUE_DRAIN_TIMEOUT="1")
    keys = Keys(prefix)
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    async with aredis.pipeline(transaction=False) as pipe:  # 2000 events to replay
        for n in range(2000):
            pipe.xadd(keys.stream(thread), {"e": encode_event(
                MessageSent(sender=bob, body=f"m{n}", client_msg_id=f"m{n}"))})
        await pipe.execute()
    channel = keys.channel(alice)

    async def vanish(sync: bool) -> None:
        ws = await websockets.connect(
            gateway.ws_url, additional_headers={"Authorization": f"Bearer {token(alice)}"})
        assert json.loads(await ws.recv())["type"] == "hello"
        assert await numsub(aredis, channel) == 1
        if sync:
            await ws.send(json.dumps({"type": "sync", "thread": thread, "after": "0"}))
            assert json.loads(await ws.recv())["type"] == "event"  # the replay is running
        ws.transport.abort()  # the client is gone, no closing handshake
        await asyncio.gather(ws.wait_closed(), return_exceptions=True)

    await vanish(sync=False)
    assert await wait_numsub(aredis, channel, 0, 5) == 0  # detached at once
    await vanish(sync=True)
    assert await wait_numsub(aredis, channel, 0, 5) == 0, "the connection was never released"


# -- Redis refusing writes -----------------------------------------------------------------


async def test_store_full_is_unavailable_not_a_1011_close(private_redis, start_gateway):
    """A full Redis (`noeviction`) answers a command `unavailable`; the socket stays open."""
    gateway = start_gateway(REDIS_URL=private_redis.url)
    admin = aioredis.Redis.from_url(private_redis.url)
    alice, bob = uid("a"), uid("b")
    a = await Client.connect(gateway.ws_url, alice)
    try:
        await admin.config_set("maxmemory", "1")
        refused = await a.say(bob, "no room")
        assert refused["type"] == "error" and refused["code"] == "unavailable", refused
        await admin.config_set("maxmemory", "0")
        retried = await a.say(bob, "no room", client_msg_id=refused["ref"])
        assert retried["type"] == "ack", retried
    finally:
        await admin.config_set("maxmemory", "0")
        await admin.aclose()
        await a.close()


async def test_sync_while_the_pubsub_connection_keeps_dying(private_redis, start_gateway, prefix):
    """Guarantee 3 with catch-ups (hub ``_confirmed`` -> pause -> catch_up) racing a sync:
    in-flight live frames, then the replay from the start, ``synced``, then live frames,
    each event exactly once after the replay restarts, each part strictly increasing."""
    gateway = start_gateway(REDIS_URL=private_redis.url)
    keys = Keys(prefix)
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    admin = aioredis.Redis.from_url(private_redis.url)
    b = await Client.connect(gateway.ws_url, bob)
    await blast(b, alice, 2000)
    a = await Client.connect(gateway.ws_url, alice)
    sending = asyncio.create_task(blast(b, alice, 600))
    await asyncio.sleep(0.05)
    mark = len(a.frames)
    await a.send({"type": "sync", "thread": thread, "after": "0"})
    kills = 0
    while not sending.done() or kills < 3:
        await asyncio.sleep(0.02)
        kills += await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    last = (await sending)[-1]["id"]
    await seen(a, lambda f: f.get("type") == "synced", 30)
    await seen(a, lambda f: f.get("type") == "event" and f["id"] == last, 30)
    tail = a.frames[mark:]
    synced_at = next(i for i, f in enumerate(tail) if f["type"] == "synced")
    before = [f["id"] for f in tail[:synced_at] if f["type"] == "event"]
    restart = next((i for i in range(1, len(before))
                    if id_key(before[i]) < id_key(before[i - 1])), 0)
    in_flight, replay = before[:restart], before[restart:]
    after = [f["id"] for f in tail[synced_at + 1:] if f["type"] == "event"]
    every = [i.decode() for i, _ in await admin.xrange(keys.stream(thread))]
    assert len(every) == 2600
    assert tail[synced_at]["recovered"] is True
    assert replay + after == every  # exactly once, in order, no gap
    assert set(in_flight) <= set(replay)
    await admin.aclose()
    await a.close()
    await b.close()


async def test_sigterm_during_a_sync_finishes_the_replay_before_1001(
        start_gateway, aredis, prefix):
    """Drain vs sync: the sync in progress is in flight, so the whole replay and its
    ``synced`` are flushed before the 1001 close."""
    gateway = start_gateway()
    keys = Keys(prefix)
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    async with aredis.pipeline(transaction=False) as pipe:
        for n in range(3000):
            pipe.xadd(keys.stream(thread), {"e": encode_event(sent(bob, f"m{n}"))})
        await pipe.execute()
    every = [i.decode() for i, _ in await aredis.xrange(keys.stream(thread))]
    a = await Client.connect(gateway.ws_url, alice)
    await a.send({"type": "sync", "thread": thread, "after": "0"})
    await seen(a, lambda f: f.get("type") == "event")
    gateway.process.send_signal(15)
    assert await a.wait_closed(15) == 1001
    assert [f["type"] for f in a.frames[-1:]] == ["synced"]
    assert [f["id"] for f in a.events(thread)] == every
    assert a.frames[-1] == {"type": "synced", "thread": thread, "last_id": every[-1],
                            "recovered": True}
