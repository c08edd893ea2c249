"""protocol.md section 2, guarantees 2 and 3 across pub/sub reconnects: resubscription
races in the hub, driven step by step on a real Redis.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from adapters.record import Keys
from adapters.redis_connect import AsyncRedis, async_redis
from gateway.backfill import schedule_catch_up
from gateway.connection import Connection
from gateway.hub import Hub
from gateway.pubsub_source import PubSubSource
from gateway.store import EventStore
from tests.faults_support import TcpProxy, numsub
from tests.support import id_key, sent, thread_of, uid

# -- the hub: resubscription races, driven step by step on a real Redis ---------------------


async def pump(hub: Hub, seconds: float = 0.3) -> None:
    """Read pub/sub messages for ``seconds`` and hand them to the hub, as ``Hub._run`` does."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        message = await hub.ps.get_message(timeout=0.02)
        if message is not None:
            hub._dispatch(message)


async def hub_on_real_redis(aredis, prefix: str) -> tuple[Hub, EventStore]:
    keys = Keys(prefix)
    store = EventStore(aredis, keys, 86400)
    hub = hub_of(store, aredis)
    hub.pubsub = await hub.source.open()  # what Hub.start does, without its reading task
    await hub.ps.subscribe(hub.own)  # what Hub._run does first; we pump by hand
    await pump(hub)
    assert hub.healthy
    return hub, store


async def attach_and_start(hub: Hub, store: EventStore, conn: Connection) -> None:
    """What ``session._serve`` does: attach, read the hello state, start."""
    attaching = asyncio.create_task(hub.attach(conn))
    while not attaching.done():
        await pump(hub, 0.05)
    await attaching
    conn.start(await store.threads(conn.user))


def hub_of(store: EventStore, source: AsyncRedis, **timing: float) -> Hub:
    """A hub as the gateway makes one: pub/sub from ``source``, gaps caught up from
    ``store`` (not started)."""
    return Hub(PubSubSource(source), store.keys.channel,
               lambda conn: schedule_catch_up(store, conn), **timing)


async def attached(hub: Hub, store: EventStore, user: str, capacity: int = 64) -> Connection:
    """A connection of ``user`` on a started hub, as ``session._serve`` makes it live."""
    conn = Connection(user, capacity)
    await asyncio.wait_for(hub.attach(conn), 5)
    conn.start(await store.threads(user))
    return conn


def event_ids(conn: Connection, thread: str) -> list[str]:
    frames = [json.loads(f) for f in conn.frames]
    return [f["id"] for f in frames if f.get("type") == "event" and f["thread"] == thread]


async def test_device_connecting_during_a_pubsub_reconnect_gets_the_gap(aredis, prefix):
    """A device attaching while pub/sub silently reconnects gets the gap after its hello."""
    hub, store = await hub_on_real_redis(aredis, prefix)
    try:
        alice, bob = uid("a"), uid("b")
        thread = thread_of(alice, bob)
        e0 = (await store.append(thread, bob, "c0", sent(bob, "c0"))).id
        first = Connection(alice, 64)
        await attach_and_start(hub, store, first)
        assert first.last[thread] == id_key(e0)

        await hub.ps.connection.disconnect()  # the pub/sub connection drops
        second = Connection(alice, 64)
        await asyncio.wait_for(hub.attach(second), 1)  # "active": no subscribe, no wait
        threads = await store.threads(alice)  # the hello state of the second device
        e1 = (await store.append(thread, bob, "c1", sent(bob, "c1"))).id  # lost: no subscriber
        await hub.ps.connection.connect()  # redis-py reconnects and resubscribes ...
        await pump(hub)  # ... the confirmation is dispatched: the first device catches up
        if second.start(threads):  # its `threads` answer arrives only now; as _serve does:
            schedule_catch_up(store, second)
        e2 = (await store.append(thread, bob, "c2", sent(bob, "c2"))).id
        await pump(hub)
        assert first.catching_up is not None
        await asyncio.wait_for(first.catching_up, 5)
        if second.catching_up is not None:
            await asyncio.wait_for(second.catching_up, 5)
    finally:
        await hub.stop()

    assert event_ids(first, thread) == [e1, e2]  # the started device recovered
    assert event_ids(second, thread) == [e1, e2]


async def test_channel_left_after_a_late_resubscribe_confirmation_is_resubscribed(
        aredis, prefix):
    """A channel left during a late resubscribe confirmation is subscribed again when needed."""
    hub, store = await hub_on_real_redis(aredis, prefix)
    try:
        alice, bob = uid("a"), uid("b")
        thread = thread_of(alice, bob)
        channel = Keys(prefix).channel(alice)
        first = Connection(alice, 64)
        await attach_and_start(hub, store, first)

        await hub.ps.connection.disconnect()
        await hub.ps.connection.connect()  # reconnected: SUBSCRIBE sent, unconfirmed
        await hub.detach(first)  # the user's last socket closes: UNSUBSCRIBE
        await pump(hub)  # subscribe confirmation (late), then unsubscribe confirmation
        assert await numsub(aredis, channel) == 0

        second = Connection(alice, 64)
        attaching = asyncio.create_task(hub.attach(second))
        await pump(hub)
        await asyncio.wait_for(attaching, 1)
        second.start(await store.threads(alice))
        e1 = (await store.append(thread, bob, "c1", sent(bob, "c1"))).id
        await pump(hub)
        subscribed = await numsub(aredis, channel)
    finally:
        await hub.stop()
    assert subscribed == 1, "the hub believes the channel is subscribed; Redis does not"
    assert event_ids(second, thread) == [e1]




async def test_connections_attaching_as_the_hub_starts_are_all_subscribed(aredis, prefix):
    """The first sockets of a gateway that just started attach while the hub's own first
    subscription is still connecting: each one gets its confirmation, none waits out the
    timeout (redis-py's PubSub opens a second connection when two commands race to open
    the first, and what was sent on the one it forgets is never answered)."""
    keys = Keys(prefix)
    store = EventStore(aredis, keys, 86400)
    for _ in range(5):  # a race: several rounds
        hub = hub_of(store, aredis)
        await hub.start()
        try:
            conns = [Connection(uid("a"), 64) for _ in range(8)]
            await asyncio.wait_for(asyncio.gather(*(hub.attach(c) for c in conns)), 3)
            for conn in conns:
                assert await numsub(aredis, keys.channel(conn.user)) == 1
        finally:
            await hub.stop()


@pytest.mark.single_redis  # a TCP proxy in front of one server: a cluster client goes around it
@pytest.mark.parametrize("ping", ["answered by nobody", "never returning"])
async def test_a_pubsub_connection_gone_silent_is_replaced_and_the_gap_caught_up(
        aredis, redis_url, prefix, ping):
    """The pub/sub connection stops carrying anything without being closed (a peer gone
    without a reset, a partition): the hub's watchdog pings, hears nothing, drops it; the
    reader reconnects and resubscribes, and what was published meanwhile is caught up.
    Also when the ping itself never returns (a write that cannot drain)."""
    port = int(redis_url.removeprefix("redis://").partition("/")[0].partition(":")[2] or 6379)
    proxy = await TcpProxy(port).start()
    via_proxy = async_redis(f"redis://127.0.0.1:{proxy.port}")
    keys = Keys(prefix)
    store = EventStore(aredis, keys, 86400)
    hub = hub_of(store, via_proxy, ping_every=0.3, silent_for=0.5)
    await hub.start()
    try:
        alice, bob = uid("a"), uid("b")
        thread = thread_of(alice, bob)
        conn = await attached(hub, store, alice)
        e0 = (await store.append(thread, bob, "c0", sent(bob, "c0"))).id
        await wait_until(lambda: event_ids(conn, thread) == [e0])
        proxy.freeze()  # open, silent: only the watchdog can tell
        if ping == "never returning":
            async def hang(*_: object) -> None:
                await asyncio.Event().wait()
            hub.ps.ping = hang  # type: ignore[method-assign]
        e1 = (await store.append(thread, bob, "c1", sent(bob, "c1"))).id
        await wait_until(lambda: event_ids(conn, thread) == [e0, e1], 10)
    finally:
        await hub.stop()
        await via_proxy.aclose()
        await proxy.close()


async def wait_until(predicate, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.05)


async def test_a_burst_read_at_once_reaches_every_connection_in_order(aredis, prefix):
    """Messages buffered by one socket read are handed out straight from the reader
    (``Hub._drain``): a burst of appends, with new subscriptions confirmed in the middle
    of it, reaches every connection once each, in the stream's order."""
    keys = Keys(prefix)
    store = EventStore(aredis, keys, 86400)
    hub = hub_of(store, aredis)
    handed: list[bytes] = []
    hand_out = hub._message

    def counted(channel: bytes, data: bytes) -> None:
        handed.append(channel)
        hand_out(channel, data)

    hub._message = counted  # type: ignore[method-assign]
    dispatched = 0
    dispatch = hub._dispatch

    def counted_dispatch(message: dict[str, object]) -> None:
        nonlocal dispatched
        dispatched += message["type"] == "message"
        dispatch(message)

    hub._dispatch = counted_dispatch  # type: ignore[method-assign]
    await hub.start()
    try:
        alice, bob = uid("a"), uid("b")
        thread = thread_of(alice, bob)
        first = await attached(hub, store, alice, 4096)
        burst = [store.append(thread, bob, f"c{n}", sent(bob, f"c{n}")) for n in range(300)]
        later = [Connection(uid("z"), 64) for _ in range(5)]  # confirmed amid the burst
        results = await asyncio.gather(*burst, *(hub.attach(c) for c in later))
        ids = sorted((r.id for r in results[:300]), key=id_key)
        await wait_until(lambda: len(event_ids(first, thread)) >= 300)
        assert event_ids(first, thread) == ids
        mine = keys.channel(alice).encode()
        assert handed.count(mine) == 300  # each once: the connection's dedupe hid nothing
        assert dispatched < len(handed), "nothing was handed out by the drain"
        for conn in later:
            assert await numsub(aredis, keys.channel(conn.user)) == 1
    finally:
        await hub.stop()
