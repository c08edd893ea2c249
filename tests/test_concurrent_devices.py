"""protocol.md section 2, commands from several devices at once: one delete wins, an edit
never lands on a deleted message, receipts only move forward, one client_msg_id appends
once, every device sees each event once; more sockets sending at once than Redis
connections in the pool are all answered.
"""

from __future__ import annotations

import asyncio

from tests.support import (
    Client,
    answer,
    blast,
    id_key,
    seen,
    stream_events,
    thread_of,
    uid,
)


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
            assert id_key(edited["id"]) < id_key(deleted["id"])
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
    ups = [id_key(up) for _, up in receipts]
    assert ups == sorted(ups) and len(set(ups)) == len(ups), receipts  # strictly forward
    for up_to, ack in answers:
        assert ack["type"] == "ack", ack
        stored = events[ack["id"]]
        assert stored["kind"] == "ReadUpTo" and stored["reader"] == alice
        if ack["duplicate"]:
            assert id_key(stored["up_to"]) >= id_key(up_to)  # the receipt that already covers it
        else:
            assert stored["up_to"] == up_to
    assert id_key(receipts[-1][1]) == id_key(ids[-1])
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


async def paced(client: Client, to: str, chunks: int, size: int) -> list[dict]:
    """``blast`` in chunks 20 ms apart: traffic that lasts ~0.6 s however fast the gateway
    answers (a connection's sends overlap, so one blast of 600 is over in a blink)."""
    answers: list[dict] = []
    for _ in range(chunks):
        answers += await blast(client, to, size)
        await asyncio.sleep(0.02)
    return answers


async def test_devices_connecting_during_traffic_get_exactly_what_follows_hello(
        shared_gateway, aredis, keys):
    """attach -> threads -> hello -> start while the other side keeps sending: each new
    connection receives every event after its hello's last_id, once, in order."""
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    b = await Client.connect(shared_gateway.ws_url, bob)
    await b.say(alice, "first")
    sending = asyncio.create_task(paced(b, alice, chunks=30, size=20))
    devices = []
    while not sending.done():
        devices.append(await Client.connect(shared_gateway.ws_url, alice))
        await asyncio.sleep(0.02)
    last = (await sending)[-1]["id"]
    stored = [i for i, _ in await stream_events(aredis, keys, thread)]
    assert len(devices) >= 3
    for device in devices:
        start = next(t["last_id"] for t in device.hello["threads"] if t["thread"] == thread)
        expected = [i for i in stored if id_key(i) > id_key(start)]
        if expected:  # the last devices may have connected after the last send
            await seen(device, lambda f: f.get("type") == "event" and f["id"] == last, 20)
        await asyncio.sleep(0.05)  # nothing more may come
        assert [f["id"] for f in device.events(thread)] == expected, start
        await device.close()
    await b.close()


# -- many sockets at once: more concurrent commands than pooled Redis connections ---------


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
