"""The five guarantees of protocol.md section 2 (the projection one comes with the projector)."""

from __future__ import annotations

import asyncio
import json

from adapters.record import B_EVENT, B_LOG_ID, B_LOG_THREAD
from tests.support import (
    Client,
    blast_acked,
    id_key,
    seen,
    strictly_increasing,
    thread_of,
    uid,
)


async def stream_ids(aredis, keys, thread: str) -> list[str]:
    return [i.decode() for i, _ in await aredis.xrange(keys.stream(thread), "-", "+")]


async def test_ack_means_the_event_is_in_the_thread_stream(shared_gateway, aredis, keys):
    alice, bob = uid("a"), uid("b")
    a = await Client.connect(shared_gateway.ws_url, alice)
    ack = await a.say(bob, "durable")
    entries = await aredis.xrange(keys.stream(ack["thread"]), ack["id"], ack["id"])
    assert len(entries) == 1
    assert json.loads(entries[0][1][B_EVENT]) == {
        "kind": "MessageSent", "sender": alice, "body": "durable", "client_msg_id": ack["ref"]}
    log = await aredis.xrange(keys.log(keys.partition(ack["thread"])), "-", "+")
    assert any((f[B_LOG_THREAD].decode(), f[B_LOG_ID].decode()) == (ack["thread"], ack["id"])
               for _, f in log)  # the partition log holds other threads, maybe with this id
    await a.close()


async def test_each_connection_sees_a_thread_in_strictly_increasing_order(
        shared_gateway, aredis, keys):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a1, a2 = [await Client.connect(shared_gateway.ws_url, alice) for _ in range(2)]
    b1, b2 = [await Client.connect(shared_gateway.ws_url, bob) for _ in range(2)]
    await asyncio.gather(blast_acked(a1, bob, 300, "a"), blast_acked(b1, alice, 300, "b"))
    expected = await stream_ids(aredis, keys, thread)
    assert len(expected) == 600
    for client in (a1, a2, b1, b2):
        await client.wait_for(lambda f: f.get("id") == expected[-1] and f["type"] == "event")
        got = [f["id"] for f in client.events(thread)] + [expected[-1]]
        assert got == expected  # every event, once, in stream order
        await client.close()


async def test_sync_replays_5000_events_exactly_once_while_the_other_keeps_sending(
        shared_gateway, aredis, keys):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    b = await Client.connect(shared_gateway.ws_url, bob)
    await blast_acked(b, alice, 5000, "pre")
    a = await Client.connect(shared_gateway.ws_url, alice)
    sender = asyncio.create_task(blast_acked(b, alice, 800, "during"))
    await asyncio.sleep(0.05)
    mark = len(a.frames)
    await a.send({"type": "sync", "thread": thread, "after": "0"})
    last_ack = (await sender)[-1]
    await seen(a, lambda f: f.get("type") == "synced" and f["thread"] == thread, 30)
    synced_at = next(i for i, f in enumerate(a.frames[mark:]) if f["type"] == "synced")
    if id_key(last_ack["id"]) > id_key(a.frames[mark + synced_at]["last_id"]):
        # stored after the replay read the stream's end: it comes live, after `synced`
        async with asyncio.timeout(30):
            while last_ack["id"] not in {f.get("id") for f in a.frames[mark + synced_at:]}:
                await asyncio.sleep(0.01)
    tail = a.frames[mark:]
    ids = [f["id"] for f in tail[:synced_at] if f["type"] == "event"]
    # Live frames that were already on their way when sync arrived come first; the
    # replay then starts again from the first event of the thread.
    start = next((i for i in range(1, len(ids)) if id_key(ids[i]) < id_key(ids[i - 1])), 0)
    in_flight, replay = ids[:start], ids[start:]
    after = [f["id"] for f in tail[synced_at + 1:] if f["type"] == "event"]
    every = await stream_ids(aredis, keys, thread)
    assert len(every) == 5800
    assert tail[synced_at] == {"type": "synced", "thread": thread, "last_id": replay[-1],
                               "recovered": True}
    assert strictly_increasing(replay) and strictly_increasing(after)
    assert replay + after == every  # each event exactly once, in order, no gap
    assert set(in_flight) <= set(replay)
    await a.close()
    await b.close()


async def test_sync_edges_after_the_end_and_empty(shared_gateway):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a = await Client.connect(shared_gateway.ws_url, alice)
    await a.send({"type": "sync", "thread": thread, "after": "0"})
    assert await a.next("synced") == {"type": "synced", "thread": thread, "last_id": "0",
                                      "recovered": True}  # nothing exists, nothing missed
    await a.send({"type": "sync", "thread": thread, "after": "5-0"})
    assert await a.next("synced") == {"type": "synced", "thread": thread, "last_id": "5-0",
                                      "recovered": False}
    ack = await a.say(bob)
    await a.send({"type": "sync", "thread": thread, "after": ack["id"]})
    assert (await a.next("synced"))["recovered"] is True
    future = f"{id_key(ack['id'])[0] + 10_000}-0"
    await a.send({"type": "sync", "thread": thread, "after": future})
    assert await a.next("synced") == {"type": "synced", "thread": thread, "last_id": future,
                                      "recovered": False}
    # a bogus `after` must not swallow later live events on this connection
    later = await a.say(bob, "later")
    assert (await a.next("event", id=later["id"]))["event"]["body"] == "later"
    await a.close()


async def test_a_third_user_learns_nothing_and_can_do_nothing(shared_gateway):
    alice, bob, carol = uid("a"), uid("b"), uid("c")
    thread = thread_of(alice, bob)
    c = await Client.connect(shared_gateway.ws_url, carol)
    a = await Client.connect(shared_gateway.ws_url, alice)
    sent = await a.say(bob, "secret")
    await a.send({"type": "typing", "thread": thread})
    for frame in (
        {"type": "send", "thread": thread, "body": "x"},
        {"type": "edit", "thread": thread, "target": sent["id"], "body": "x"},
        {"type": "delete", "thread": thread, "target": sent["id"]},
        {"type": "read", "thread": thread, "up_to": sent["id"]},
    ):
        assert (await c.request(frame))["code"] == "forbidden"
    await c.send({"type": "sync", "thread": thread, "after": "0"})
    assert (await c.next("error"))["code"] == "forbidden"
    await c.send({"type": "typing", "thread": thread})
    assert (await c.next("error"))["code"] == "forbidden"
    own = await c.say(carol, "marker")  # everything before this has been answered
    await c.next("event", id=own["id"])
    assert [f for f in c.frames if f.get("thread") == thread] == []
    fresh = await Client.connect(shared_gateway.ws_url, carol)
    assert fresh.hello["threads"] == [
        {"thread": own["thread"], "with": carol, "last_id": own["id"]}]
    for client in (a, c, fresh):
        await client.close()


async def test_resend_after_the_socket_dropped_before_the_ack(shared_gateway, aredis, keys):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    b = await Client.connect(shared_gateway.ws_url, bob)
    a = await Client.connect(shared_gateway.ws_url, alice)
    await a.send({"type": "send", "to": bob, "body": "once", "client_msg_id": "drop-1"})
    await a.close()  # gone before reading the ack
    first = await b.next("event")
    again = await Client.connect(shared_gateway.ws_url, alice)
    ack = await again.say(bob, "once", client_msg_id="drop-1")
    assert ack == {"type": "ack", "ref": "drop-1", "thread": thread, "id": first["id"],
                   "ts": first["ts"], "duplicate": True}
    other_device = await Client.connect(shared_gateway.ws_url, alice)
    assert (await other_device.say(bob, "once", client_msg_id="drop-1"))["id"] == first["id"]
    assert await stream_ids(aredis, keys, thread) == [first["id"]]
    marker = await again.say(bob, "marker")
    await b.next("event", id=marker["id"])
    assert [f["id"] for f in b.events(thread)] == []  # bob got "once" exactly once
    for client in (b, again, other_device):
        await client.close()


async def test_two_gateway_processes_share_one_redis(start_gateway):
    one, two = start_gateway(), start_gateway()
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a1 = await Client.connect(one.ws_url, alice)
    a2 = await Client.connect(two.ws_url, alice)
    b2 = await Client.connect(two.ws_url, bob)
    acks = [*await blast_acked(a1, bob, 50, "a"), *await blast_acked(b2, alice, 50, "b")]
    ids = sorted((a["id"] for a in acks), key=id_key)
    for client in (a1, a2, b2):
        await client.wait_for(lambda f: f.get("type") == "event" and f["id"] == ids[-1])
        assert [f["id"] for f in client.events(thread)] + [ids[-1]] == ids
    b1 = await Client.connect(one.ws_url, bob)
    assert b1.hello["threads"] == [{"thread": thread, "with": alice, "last_id": ids[-1]}]
    for client in (a1, a2, b1, b2):
        await client.close()
