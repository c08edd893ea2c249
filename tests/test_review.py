"""Review of the gateway: races and inputs that break protocol.md section 2.

Tests marked "fails now" demonstrate a defect; the others pin down races nobody had
tested yet and pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json

import redis.asyncio as aioredis
import websockets

from adapters.record import Keys
from domain.state import fold
from gateway.backfill import schedule_catch_up
from gateway.connection import Connection
from gateway.hub import Hub
from gateway.store import PAGE_LUA, EventStore
from schemas.events import MessageSent, decode_event, encode_event
from tests.support import Client, thread_of, token, uid


def padded_id(event_id: str) -> str:
    """The same event id with a leading zero: Redis (and ``event_key``) read it as equal."""
    return "0" + event_id


# -- event ids with leading zeros ----------------------------------------------------------
#
# ``domain.ids.event_key`` and Redis (XRANGE) accept ``0<id>`` as the very id ``<id>``, but
# the gateway then uses the text as sent: in the guard fields (``x:<target>``,
# ``r:<reader>``), in the Lua ``newer`` (which compares digit counts), and in the stored
# event. A fix may canonicalise such ids or refuse them as ``invalid``; both pass these.


async def test_zero_padded_target_reaches_a_deleted_message(shared_gateway, aredis, keys):
    """Fails now: an edit and a second delete of a deleted message are acked and appended
    (protocol: only a MessageSent that is not deleted, ``not_found`` otherwise)."""
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a = await Client.connect(shared_gateway.ws_url, alice)
    sent_ = await a.say(bob, "to be deleted")
    deleted = await a.request({"type": "delete", "thread": thread, "target": sent_["id"]})
    assert deleted["type"] == "ack"
    edited = await a.request({"type": "edit", "thread": thread,
                              "target": padded_id(sent_["id"]), "body": "back"})
    again = await a.request({"type": "delete", "thread": thread,
                             "target": padded_id(sent_["id"])})
    kinds = [e["kind"] for _, e in await stream_events(aredis, keys, thread)]
    await a.close()
    assert (edited["type"], again["type"]) == ("error", "error"), (edited, again)
    assert {edited["code"], again["code"]} <= {"not_found", "invalid"}, (edited, again)
    assert kinds == ["MessageSent", "MessageDeleted"], kinds


async def test_zero_padded_edit_names_the_message_it_edits(shared_gateway, aredis, keys):
    """Fails now: the edit is acked but its stored ``target`` is ``0<id>``, which no fold
    matches (``domain.state`` keys messages by id text): the projection and every client
    keep the old body."""
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a = await Client.connect(shared_gateway.ws_url, alice)
    sent_ = await a.say(bob, "before")
    edited = await a.request({"type": "edit", "thread": thread,
                              "target": padded_id(sent_["id"]), "body": "after"})
    events = await stream_events(aredis, keys, thread)
    await a.close()
    if edited["type"] == "error":
        assert edited["code"] == "invalid", edited
        return
    state = fold(thread, [(i, decode_event(json.dumps(e))) for i, e in events])
    assert events[-1][1]["target"] == sent_["id"], events[-1]
    assert state.messages[sent_["id"]].body == "after"


async def test_zero_padded_read_receipt_does_not_break_later_receipts(shared_gateway):
    """Fails now: the receipt ``0<id>`` is stored as is; the append script's ``newer``
    compares digit counts first, so it looks newer than every later id: each later
    receipt fails the guard three times and is refused ``unavailable``, forever."""
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a = await Client.connect(shared_gateway.ws_url, alice)
    b = await Client.connect(shared_gateway.ws_url, bob)
    m1 = await a.say(bob, "one")
    m2 = await a.say(bob, "two")
    first = await b.request({"type": "read", "thread": thread, "up_to": padded_id(m1["id"])})
    live = await a.next("event", id=first["id"]) if first["type"] == "ack" else None
    later = await b.request({"type": "read", "thread": thread, "up_to": m2["id"]})
    retried = await b.request({"type": "read", "thread": thread, "up_to": m2["id"]})
    await a.close()
    await b.close()
    assert later["type"] == "ack" and later["duplicate"] is False, later
    assert retried["type"] == "ack" and retried["id"] == later["id"], retried
    if live is None:
        assert first["code"] == "invalid", first
    else:
        assert live["event"]["up_to"] == m1["id"], live  # an id of the thread, as emitted


# -- a Redis proxy that cuts the gateway's command connections, never its pub/sub one ------


class RedisProxy:
    """TCP proxy in front of Redis. ``trip(pred)``: when a command matching ``pred`` comes
    through a command connection, drop every command connection (not that command) and
    refuse new ones until ``heal()``. The pub/sub connection (it sent SUBSCRIBE) is kept,
    so the gateway sees no pub/sub gap and runs no catch-up."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, list[bool]]] = []
        self.refusing = False
        self.predicate = None
        self.tripped = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.handlers: set[asyncio.Task] = set()

    @classmethod
    async def open(cls, redis_url: str) -> RedisProxy:
        host, _, port = redis_url.removeprefix("redis://").partition("/")[0].partition(":")
        proxy = cls(host, int(port or 6379))
        proxy.server = await asyncio.start_server(proxy._accept, "127.0.0.1", 0)
        proxy.port = proxy.server.sockets[0].getsockname()[1]
        return proxy

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def trip(self, predicate) -> None:
        self.tripped.clear()
        self.predicate = predicate

    def heal(self) -> None:
        self.predicate = None
        self.refusing = False

    def _cut(self) -> None:
        self.refusing = True
        self.predicate = None
        for client, upstream, pubsub in self.links:
            if not pubsub[0]:
                client.transport.abort()
                upstream.transport.abort()
        self.tripped.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            await self._relay(reader, writer)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self.handlers.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        pubsub = [False]
        link = (writer, up_writer, pubsub)
        self.links.append(link)

        async def to_redis() -> None:
            while data := await reader.read(1 << 16):
                if b"SUBSCRIBE" in data:
                    pubsub[0] = True
                if not pubsub[0] and self.predicate is not None and self.predicate(data):
                    self._cut()
                    return
                up_writer.write(data)
                await up_writer.drain()

        async def to_client() -> None:
            while data := await up_reader.read(1 << 16):
                writer.write(data)
                await writer.drain()

        await asyncio.gather(to_redis(), to_client(), return_exceptions=True)
        self.links.remove(link)
        writer.transport.abort()
        up_writer.transport.abort()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for client, upstream, _ in list(self.links):
            client.transport.abort()
            upstream.transport.abort()
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)


@contextlib.asynccontextmanager
async def proxied_gateway(start_gateway, redis_url: str, **env: str):
    """A gateway whose Redis traffic goes through a ``RedisProxy``; both stopped on exit
    (the gateway first, from a thread, so that its drain can still talk through the proxy)."""
    proxy = await RedisProxy.open(redis_url)
    gateway = None
    try:
        # started from a thread: the proxy runs on this event loop, and the gateway's
        # startup talks to Redis through it while start() waits for /healthz
        gateway = await asyncio.to_thread(start_gateway, REDIS_URL=proxy.url, **env)
        yield gateway, proxy
    finally:
        proxy.heal()
        if gateway is not None:
            await asyncio.to_thread(gateway.terminate)
        await proxy.close()


async def say_until_acked(client: Client, to: str, body: str) -> dict:
    """Send until acked with the same client_msg_id (the first tries may meet dead
    pooled connections)."""
    cmid = client.cmid()
    for _ in range(50):
        answer = await client.say(to, body, client_msg_id=cmid)
        if answer["type"] == "ack":
            return answer
        await asyncio.sleep(0.1)
    raise AssertionError(answer)


# -- a sync that fails must not stop live delivery of its thread --------------------------

PAGE_SHA = hashlib.sha1(PAGE_LUA.encode()).hexdigest().encode()  # replays read pages by SHA


async def test_sync_refused_unavailable_must_not_swallow_later_live_events(
        start_gateway, redis_url):
    """Fails now. ``handlers.sync`` calls ``conn.hold(thread)`` and then ``store.bounds``;
    when Redis fails there, the error propagates and nothing ever calls ``release``: every
    later live event of that thread is parked in ``conn.held`` (and the socket is closed
    1013 once ``outbox`` of them pile up)."""
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


async def test_sync_failing_mid_replay_must_not_swallow_later_live_events(
        start_gateway, redis_url):
    """Fails now. Redis fails between two replay chunks (the XRANGE starting at ``(``):
    ``replay_thread`` marks the thread stale and leaves it held, but only a pub/sub
    catch-up would ever retry it; after a failed ``sync`` nothing does, so the rest of
    the thread and every later live event of it never reach the socket."""
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


# -- a client that vanishes during a paced replay ------------------------------------------


async def numsub(aredis, channel: str) -> int:
    return int((await aredis.pubsub_numsub(channel))[0][1])


async def wait_numsub(aredis, channel: str, want: int, timeout: float) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    while (got := await numsub(aredis, channel)) != want:
        if asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.05)
    return got


async def test_client_vanishing_during_a_paced_replay_is_released(
        start_gateway, aredis, prefix):
    """Fails now. ``_send`` returns quietly when the socket is gone, without closing the
    ``Connection``; a replay waiting in ``push_paced`` for ``room`` (only set by the sender
    or by ``close``) then waits forever, so ``_receive`` never sees the disconnect: the
    connection is never detached (its user's channel stays subscribed, it stays in
    ``gateway.connections``) until something else closes it."""
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


# -- the hub: resubscription races, driven step by step on a real Redis ---------------------


async def pump(hub: Hub, seconds: float = 0.3) -> None:
    """Read pub/sub messages for ``seconds`` and hand them to the hub, as ``Hub._run`` does."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        message = await hub.pubsub.get_message(timeout=0.02)
        if message is not None:
            hub._dispatch(message)


async def hub_on_real_redis(aredis, prefix: str) -> tuple[Hub, EventStore]:
    keys = Keys(prefix)
    store = EventStore(aredis, keys, 86400)
    hub = Hub(aredis, keys.channel, lambda conn: schedule_catch_up(store, conn))
    await hub.pubsub.subscribe(hub.own)  # what Hub._run does first; we pump by hand
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


def sent(user: str, cmid: str) -> MessageSent:
    return MessageSent(sender=user, body=cmid, client_msg_id=cmid)


def event_ids(conn: Connection, thread: str) -> list[str]:
    frames = [json.loads(f) for f in conn.frames]
    return [f["id"] for f in frames if f.get("type") == "event" and f["thread"] == thread]


async def test_device_connecting_during_a_pubsub_reconnect_misses_the_gap(aredis, prefix):
    """Fails now. A second device attaches while the pub/sub connection is down but the
    hub still lists the channel as active (redis-py reconnects inside ``get_message``, so
    ``_run`` sees no error): ``attach`` returns at once, the device reads its hello state,
    an event is published into the void, then the resubscription is confirmed while the
    device still waits for its ``threads`` answer. ``_confirmed`` pauses and catches up
    only ``started`` connections, so this device starts from a state older than the gap
    and never receives the lost event (and then gets the next one: a gap)."""
    hub, store = await hub_on_real_redis(aredis, prefix)
    try:
        alice, bob = uid("a"), uid("b")
        thread = thread_of(alice, bob)
        e0 = (await store.append(thread, bob, "c0", sent(bob, "c0"))).id
        first = Connection(alice, 64)
        await attach_and_start(hub, store, first)
        assert first.last[thread] == key(e0)

        await hub.pubsub.connection.disconnect()  # the pub/sub connection drops
        second = Connection(alice, 64)
        await asyncio.wait_for(hub.attach(second), 1)  # "active": no subscribe, no wait
        threads = await store.threads(alice)  # the hello state of the second device
        e1 = (await store.append(thread, bob, "c1", sent(bob, "c1"))).id  # lost: no subscriber
        await hub.pubsub.connection.connect()  # redis-py reconnects and resubscribes ...
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
    """Fails now. The last connection of a user detaches (UNSUBSCRIBE) while a
    resubscription of its channel is still unconfirmed (redis-py reconnected just before):
    the late confirmation makes ``_confirmed`` add the channel to ``active`` although the
    UNSUBSCRIBE that follows removes it in Redis. The next connection of that user then
    skips SUBSCRIBE (``channel in self.active``) and gets no live event at all."""
    hub, store = await hub_on_real_redis(aredis, prefix)
    try:
        alice, bob = uid("a"), uid("b")
        thread = thread_of(alice, bob)
        channel = Keys(prefix).channel(alice)
        first = Connection(alice, 64)
        await attach_and_start(hub, store, first)

        await hub.pubsub.connection.disconnect()
        await hub.pubsub.connection.connect()  # reconnected: SUBSCRIBE sent, unconfirmed
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


# -- Redis refusing writes -----------------------------------------------------------------


async def test_store_full_is_unavailable_not_a_1011_close(private_redis, start_gateway):
    """Fails now. With ``maxmemory-policy noeviction`` (compose.yaml) a full Redis answers
    the append with ``OOM command not allowed``: a ``ResponseError`` that ``code_for`` does
    not map, so every command closes the socket with 1011 instead of an ``unavailable``
    refusal (nothing was appended; the client should keep its socket and retry)."""
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


# -- races that hold today (no test covered them) ------------------------------------------


async def stream_events(aredis, keys, thread: str) -> list[tuple[str, dict]]:
    return [(i.decode(), json.loads(f[b"e"]))
            for i, f in await aredis.xrange(keys.stream(thread), "-", "+")]


async def answer(client: Client, ref: str) -> dict:
    return await client.wait_for(
        lambda f: f.get("type") in ("ack", "error") and f.get("ref") == ref)


def key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


async def test_two_devices_delete_one_message_at_once(shared_gateway, aredis, keys):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a1 = await Client.connect(shared_gateway.ws_url, alice)
    a2 = await Client.connect(shared_gateway.ws_url, alice)
    for n in range(20):
        target = (await a1.say(bob, f"m{n}"))["id"]
        frames = [{"type": "delete", "thread": thread, "target": target,
                   "client_msg_id": f"d{n}-{i}"} for i in (1, 2)]
        await asyncio.gather(a1.send(frames[0]), a2.send(frames[1]))
        answers = [await answer(a1, f"d{n}-1"), await answer(a2, f"d{n}-2")]
        outcomes = sorted((f["type"], f.get("code")) for f in answers)
        assert outcomes == [("ack", None), ("error", "not_found")], answers
    events = await stream_events(aredis, keys, thread)
    deletes = [e["target"] for _, e in events if e["kind"] == "MessageDeleted"]
    assert len(deletes) == len(set(deletes)) == 20
    await a1.close()
    await a2.close()


async def test_edit_racing_delete_never_edits_a_deleted_message(shared_gateway, aredis, keys):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a1 = await Client.connect(shared_gateway.ws_url, alice)
    a2 = await Client.connect(shared_gateway.ws_url, alice)
    for n in range(20):
        target = (await a1.say(bob, f"m{n}"))["id"]
        edit = {"type": "edit", "thread": thread, "target": target, "body": "new",
                "client_msg_id": f"e{n}"}
        delete = {"type": "delete", "thread": thread, "target": target,
                  "client_msg_id": f"d{n}"}
        await asyncio.gather(a1.send(edit), a2.send(delete))
        edited, deleted = await answer(a1, f"e{n}"), await answer(a2, f"d{n}")
        assert deleted["type"] == "ack", deleted
        if edited["type"] == "ack":
            assert key(edited["id"]) < key(deleted["id"])
        else:
            assert edited["code"] == "not_found", edited
    deleted_yet: dict[str, bool] = {}  # MessageSent id -> deleted, over the stream
    for event_id, event in await stream_events(aredis, keys, thread):
        if event["kind"] == "MessageSent":
            deleted_yet[event_id] = False
        else:
            assert deleted_yet[event["target"]] is False, event  # a live message only
            deleted_yet[event["target"]] = event["kind"] == "MessageDeleted"
    assert all(deleted_yet.values())
    await a1.close()
    await a2.close()


async def test_read_receipts_from_two_devices_at_once_only_move_forward(
        shared_gateway, aredis, keys):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    b = await Client.connect(shared_gateway.ws_url, bob)
    a1 = await Client.connect(shared_gateway.ws_url, alice)
    a2 = await Client.connect(shared_gateway.ws_url, alice)
    ids = [(await b.say(alice, f"m{n}"))["id"] for n in range(40)]
    answers = []
    for n in range(0, 40, 2):
        low, high = ids[n], ids[n + 1]
        first, second = (a1, a2) if n % 4 else (a2, a1)
        await asyncio.gather(
            first.send({"type": "read", "thread": thread, "up_to": high,
                        "client_msg_id": f"r{n}-hi"}),
            second.send({"type": "read", "thread": thread, "up_to": low,
                         "client_msg_id": f"r{n}-lo"}))
        answers += [(high, await answer(first, f"r{n}-hi")),
                    (low, await answer(second, f"r{n}-lo"))]
    events = dict(await stream_events(aredis, keys, thread))
    receipts = [(i, e["up_to"]) for i, e in events.items() if e["kind"] == "ReadUpTo"]
    ups = [key(up) for _, up in receipts]
    assert ups == sorted(ups) and len(set(ups)) == len(ups), receipts  # strictly forward
    for up_to, ack in answers:
        assert ack["type"] == "ack", ack
        stored = events[ack["id"]]
        assert stored["kind"] == "ReadUpTo" and stored["reader"] == alice
        if ack["duplicate"]:
            assert key(stored["up_to"]) >= key(up_to)  # the receipt that already covers it
        else:
            assert stored["up_to"] == up_to
    assert key(receipts[-1][1]) == key(ids[-1])
    for client in (a1, a2, b):
        await client.close()


async def test_one_client_msg_id_from_two_devices_at_once_appends_once(
        shared_gateway, aredis, keys):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a1 = await Client.connect(shared_gateway.ws_url, alice)
    a2 = await Client.connect(shared_gateway.ws_url, alice)
    for n in range(20):
        send = {"type": "send", "to": bob, "body": f"m{n}", "client_msg_id": f"s{n}"}
        await asyncio.gather(a1.send(send), a2.send(send))
        acks = [await answer(a1, f"s{n}"), await answer(a2, f"s{n}")]
        assert {a["id"] for a in acks} == {acks[0]["id"]}, acks
        assert sorted(a["duplicate"] for a in acks) == [False, True], acks
        delete = {"type": "delete", "thread": thread, "target": acks[0]["id"],
                  "client_msg_id": f"d{n}"}
        await asyncio.gather(a1.send(delete), a2.send(delete))
        acks = [await answer(a1, f"d{n}"), await answer(a2, f"d{n}")]
        assert [a["type"] for a in acks] == ["ack", "ack"], acks
        assert acks[0]["id"] == acks[1]["id"]
        assert sorted(a["duplicate"] for a in acks) == [False, True], acks
    kinds = [e["kind"] for _, e in await stream_events(aredis, keys, thread)]
    assert kinds == ["MessageSent", "MessageDeleted"] * 20
    await a1.close()
    await a2.close()


async def test_note_to_self_on_two_devices_each_event_once(shared_gateway, aredis, keys):
    alice = uid("a")
    thread = f"dm:{alice}:{alice}"
    a1 = await Client.connect(shared_gateway.ws_url, alice)
    a2 = await Client.connect(shared_gateway.ws_url, alice)
    sent1 = await a1.say(alice, "one")
    sent2 = await a2.say(alice, "two", thread=thread)
    await a1.send({"type": "typing", "thread": thread})
    edited = await a2.request({"type": "edit", "thread": thread, "target": sent1["id"],
                               "body": "uno"})
    deleted = await a1.request({"type": "delete", "thread": thread, "target": sent2["id"]})
    read = await a2.request({"type": "read", "thread": thread, "up_to": deleted["id"]})
    assert [f["type"] for f in (edited, deleted, read)] == ["ack"] * 3
    stored = [i for i, _ in await stream_events(aredis, keys, thread)]
    for client in (a1, a2):
        await client.wait_for(lambda f: f.get("type") == "event" and f["id"] == stored[-1])
        got = [f["id"] for f in client.events(thread)] + [stored[-1]]
        assert got == stored  # every event once, in order, on both devices
        assert not [f for f in client.frames if f["type"] == "typing"]
    fresh = await Client.connect(shared_gateway.ws_url, alice)
    assert fresh.hello["threads"] == [{"thread": thread, "with": alice, "last_id": stored[-1]}]
    for client in (a1, a2, fresh):
        await client.close()


async def test_devices_connecting_during_traffic_get_exactly_what_follows_hello(
        shared_gateway, aredis, keys):
    """attach -> threads -> hello -> start while the other side keeps sending: each new
    connection receives every event after its hello's last_id, once, in order."""
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    b = await Client.connect(shared_gateway.ws_url, bob)
    await b.say(alice, "first")
    sending = asyncio.create_task(blast(b, alice, 600))
    devices = []
    while not sending.done():
        devices.append(await Client.connect(shared_gateway.ws_url, alice))
        await asyncio.sleep(0.02)
    last = (await sending)[-1]["id"]
    stored = [i for i, _ in await stream_events(aredis, keys, thread)]
    assert len(devices) >= 3
    for device in devices:
        start = next(t["last_id"] for t in device.hello["threads"] if t["thread"] == thread)
        expected = [i for i in stored if key(i) > key(start)]
        if expected:  # the last devices may have connected after the last send
            await seen(device, lambda f: f.get("type") == "event" and f["id"] == last, 20)
        await asyncio.sleep(0.05)  # nothing more may come
        assert [f["id"] for f in device.events(thread)] == expected, start
        await device.close()
    await b.close()


async def seen(client: Client, predicate, timeout: float = 10.0) -> None:
    """Wait until a frame matching ``predicate`` has arrived (without consuming it)."""
    async with asyncio.timeout(timeout):
        while not any(predicate(f) for f in client.frames):
            assert not client.reader.done(), client.ws.close_code
            await asyncio.sleep(0.01)


async def blast(client: Client, to: str, count: int) -> list[dict]:
    cmids = [f"x-{client.cmid()}" for _ in range(count)]
    for cmid in cmids:
        await client.send({"type": "send", "to": to, "body": cmid, "client_msg_id": cmid})
    return [await client.wait_for(lambda f, c=cmid: f.get("ref") == c, 60) for cmid in cmids]


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
                    if key(before[i]) < key(before[i - 1])), 0)
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
