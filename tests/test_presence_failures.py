"""protocol.md section 5, Presence, when gateways end: a gateway killed with SIGKILL takes
its users offline by lease expiry (found by the watchers' sweep), ``last_seen`` its last
heartbeat; a gateway drained with SIGTERM takes them offline at once, as a clean close."""

from __future__ import annotations

import asyncio
import time

import httpx

from adapters import presence
from tests.presence_support import befriend, next_presence, now_ms
from tests.support import Client, token, uid

LEASE = 2.0  # seconds (DUOLOGUE_PRESENCE_LEASE): heartbeats and sweeps every 0.67 s


async def test_sigkill_takes_users_offline_by_lease_expiry(start_gateway, aredis, prefix):
    """Attacks: presence that needs the dead gateway's cooperation (stays online for
    ever), a lease never renewed (the user would drop offline while connected), and a
    last_seen that is not the dead gateway's last heartbeat. Repeated: the kill lands at
    a different point of the heartbeat each round."""
    env = {"DUOLOGUE_PRESENCE_LEASE": str(LEASE)}
    gw1 = start_gateway(**env)
    alice, bob = uid("a"), uid("b")
    watcher = await Client.connect(gw1.ws_url, alice)
    await befriend(watcher, bob)
    await watcher.send({"type": "watch", "users": [bob]})
    await next_presence(watcher, bob)
    for _ in range(3):
        gw2 = start_gateway(**env)
        user = await Client.connect(gw2.ws_url, bob)
        await next_presence(watcher, bob, 2.0, online=True)
        await asyncio.sleep(2 * LEASE)  # outlives one lease: heartbeats renewed it
        assert not [f for f in watcher.frames if f.get("type") == "presence"]
        killed_at = now_ms()
        gw2.kill()
        started = time.monotonic()
        frame = await next_presence(watcher, bob, LEASE + 3.0, online=False)
        assert time.monotonic() - started <= LEASE + presence.sweep_s(int(LEASE * 1000)) + 1.0
        heartbeat_ms = presence.heartbeat_s(int(LEASE * 1000)) * 1000
        assert killed_at - heartbeat_ms - 100 <= frame["last_seen"] <= killed_at + 50
        async with httpx.AsyncClient(base_url=gw1.http_url) as http:
            answer = await http.get("/v1/presence", params={"users": bob},
                                    headers={"Authorization": f"Bearer {token(alice)}"})
        assert answer.json()["presence"] == [{"user": bob, **{k: frame[k] for k in (
            "online", "last_seen")}}]
        await user.wait_closed()
    # a later connection folds the dead leases into `ls`: no field of a dead gateway stays
    user = await Client.connect(gw1.ws_url, bob)
    await next_presence(watcher, bob, 2.0, online=True)
    fields = await aredis.hgetall(presence.key(prefix, bob))
    assert len(fields) == 2 and presence.LAST_SEEN in fields, fields
    await user.close()
    await watcher.close()


async def test_sigterm_drain_publishes_offline(start_gateway, aredis, prefix):
    """Attacks: a drain that closes sockets without taking their leases down (watchers
    would wait for the lease to expire, 45 s by default)."""
    gw1 = start_gateway()
    alice, bob, carol = uid("a"), uid("b"), uid("c")
    watcher = await Client.connect(gw1.ws_url, alice)
    await befriend(watcher, bob)
    await befriend(watcher, carol)
    await watcher.send({"type": "watch", "users": [bob, carol]})
    await next_presence(watcher, bob)
    await next_presence(watcher, carol)
    gw2 = start_gateway()
    users = [await Client.connect(gw2.ws_url, u) for u in (bob, bob, carol)]
    await next_presence(watcher, bob, 2.0, online=True)
    await next_presence(watcher, carol, 2.0, online=True)
    before = now_ms()
    stopping = asyncio.get_running_loop().run_in_executor(None, gw2.terminate)
    for user in (bob, carol):
        frame = await next_presence(watcher, user, 2.0, online=False)
        assert before - 50 <= frame["last_seen"] <= now_ms() + 50
    assert await stopping in (0, -15)  # uvicorn re-raises SIGTERM; not killed after a timeout
    for user in (bob, carol):
        fields = await aredis.hgetall(presence.key(prefix, user))
        assert list(fields) == [presence.LAST_SEEN], fields
    for client in users:
        assert await client.wait_closed() == 1001
    await watcher.close()


async def test_leases_are_renewed_after_redis_forgot_the_script(start_gateway, aredis):
    """Attacks: a heartbeat whose pipeline queues the presence script by its sha alone
    (after a Redis restart or a failover, NOSCRIPT for every lease: a connected user
    drops offline while connected)."""
    env = {"DUOLOGUE_PRESENCE_LEASE": str(LEASE)}
    gateway = start_gateway(**env)
    alice, bob = uid("a"), uid("b")
    watcher = await Client.connect(gateway.ws_url, alice)
    user = await Client.connect(gateway.ws_url, bob)
    try:
        await befriend(watcher, bob)
        await watcher.send({"type": "watch", "users": [bob]})
        await next_presence(watcher, bob, 2.0, online=True)
        for _ in range(3):  # each flush lands at another point of the heartbeat
            await aredis.script_flush()
            await asyncio.sleep(LEASE)
        assert not [f for f in watcher.frames if f.get("type") == "presence"], watcher.frames
    finally:
        await user.close()
        await watcher.close()
