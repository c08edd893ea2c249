"""Every client frame of the contract, through a real gateway and Redis."""

from __future__ import annotations

import asyncio
import time

from tests.support import Client, id_key, thread_of, token, uid


async def test_hello_lists_threads_newest_first_with_last_id(shared_gateway):
    alice, bob, carol = uid("a"), uid("b"), uid("c")
    a = await Client.connect(shared_gateway.ws_url, alice)
    assert a.hello == {"type": "hello", "user": alice, "threads": [],
                       "limits": {"max_body": 4000, "max_frame": 65536}}
    first = await a.say(bob)
    await asyncio.sleep(0.005)  # two threads' events in one millisecond tie: either order
    second = await a.say(carol)
    again = await Client.connect(shared_gateway.ws_url, alice)
    assert again.hello["threads"] == [
        {"thread": thread_of(alice, carol), "with": carol, "last_id": second["id"]},
        {"thread": thread_of(alice, bob), "with": bob, "last_id": first["id"]},
    ]
    await a.close()
    await again.close()


async def test_send_acks_and_reaches_every_device_of_both(shared_gateway):
    alice, bob = uid("a"), uid("b")
    a1 = await Client.connect(shared_gateway.ws_url, alice)
    a2 = await Client.connect(shared_gateway.ws_url, alice)
    b1 = await Client.connect(shared_gateway.ws_url, bob)
    ack = await a1.say(bob, "hello bob", client_msg_id="m-1")
    thread = thread_of(alice, bob)
    assert ack["type"] == "ack" and ack["ref"] == "m-1" and ack["thread"] == thread
    assert ack["duplicate"] is False and ack["ts"] == id_key(ack["id"])[0]
    assert abs(ack["ts"] - time.time() * 1000) < 60_000
    expected = {"type": "event", "thread": thread, "id": ack["id"], "ts": ack["ts"],
                "event": {"kind": "MessageSent", "sender": alice, "body": "hello bob",
                          "client_msg_id": "m-1"}}
    for client in (a1, a2, b1):
        assert await client.next("event") == expected
    for client in (a1, a2, b1):
        await client.close()


async def test_send_by_thread_and_note_to_self(shared_gateway):
    alice, bob = uid("a"), uid("b")
    a = await Client.connect(shared_gateway.ws_url, alice)
    ack = await a.request({"type": "send", "thread": thread_of(alice, bob), "body": "x"})
    assert ack["type"] == "ack" and ack["thread"] == thread_of(alice, bob)
    own = await a.say(alice, "note")
    assert own["thread"] == f"dm:{alice}:{alice}"
    event = await a.next("event", thread=own["thread"])
    assert event["event"]["body"] == "note"
    await a.close()


async def test_edit_and_delete_rules(shared_gateway):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a = await Client.connect(shared_gateway.ws_url, alice)
    b = await Client.connect(shared_gateway.ws_url, bob)
    sent = await a.say(bob, "first")
    edit = {"type": "edit", "thread": thread, "target": sent["id"], "body": "first!"}
    edited = await a.request(dict(edit))
    assert edited["type"] == "ack" and edited["duplicate"] is False
    event = await b.next("event", id=edited["id"])
    assert event["event"] == {"kind": "MessageEdited", "sender": alice, "target": sent["id"],
                              "body": "first!", "client_msg_id": edited["ref"]}
    assert (await b.request(dict(edit)))["code"] == "forbidden"
    assert (await a.request({**edit, "target": edited["id"]}))["code"] == "not_found"
    assert (await a.request({**edit, "target": "1-0"}))["code"] == "not_found"
    assert (await a.request({**edit, "target": "nope"}))["code"] == "invalid"
    delete = {"type": "delete", "thread": thread, "target": sent["id"]}
    assert (await b.request(dict(delete)))["code"] == "forbidden"
    deleted = await a.request(dict(delete))
    assert deleted["type"] == "ack"
    event = await b.next("event", id=deleted["id"])
    assert event["event"] == {"kind": "MessageDeleted", "sender": alice, "target": sent["id"],
                              "client_msg_id": deleted["ref"]}
    assert (await a.request(dict(delete)))["code"] == "not_found"
    assert (await a.request(dict(edit)))["code"] == "not_found"
    await a.close()
    await b.close()


async def test_read_receipts_only_move_forward(shared_gateway):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a = await Client.connect(shared_gateway.ws_url, alice)
    b = await Client.connect(shared_gateway.ws_url, bob)
    m1, m2 = await a.say(bob, "1"), await a.say(bob, "2")
    read2 = await b.request({"type": "read", "thread": thread, "up_to": m2["id"]})
    assert read2["type"] == "ack" and read2["duplicate"] is False
    event = await a.next("event", id=read2["id"])
    assert event["event"] == {"kind": "ReadUpTo", "reader": bob, "up_to": m2["id"]}
    stale = await b.request({"type": "read", "thread": thread, "up_to": m1["id"]})
    assert stale == {**stale, "type": "ack", "duplicate": True, "id": read2["id"]}
    same = await b.request({"type": "read", "thread": thread, "up_to": m2["id"]})
    assert same["duplicate"] is True and same["id"] == read2["id"]
    missing = await b.request({"type": "read", "thread": thread, "up_to": "1-1"})
    assert missing["code"] == "not_found"
    # Alice's receipt is her own: it may point at her own message.
    mine = await a.request({"type": "read", "thread": thread, "up_to": m1["id"]})
    assert mine["type"] == "ack" and mine["duplicate"] is False
    await a.close()
    await b.close()


async def test_typing_reaches_only_the_other_participant(shared_gateway):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a = await Client.connect(shared_gateway.ws_url, alice)
    b = await Client.connect(shared_gateway.ws_url, bob)
    await a.send({"type": "typing", "thread": thread})
    assert await b.next("typing") == {"type": "typing", "thread": thread, "user": alice}
    await a.say(bob)  # a marker: by the time its ack arrives no typing came back to alice
    assert not [f for f in a.frames if f["type"] == "typing"]
    await a.close()
    await b.close()


async def test_refresh_extends_the_connection(shared_gateway):
    alice = uid("a")
    a = await Client.connect(shared_gateway.ws_url, alice, ttl=3)
    fresh = token(alice, 600)
    await a.send({"type": "refresh", "token": fresh})
    refreshed = await a.next("refreshed")
    assert refreshed["exp"] >= time.time() + 590
    await a.send({"type": "refresh", "token": token(uid("x"), 600)})
    assert (await a.next("error"))["code"] == "forbidden"
    await a.send({"type": "refresh", "token": "garbage"})
    assert (await a.next("error"))["code"] == "invalid"
    await __import__("asyncio").sleep(4.5)
    assert (await a.say(alice))["type"] == "ack"  # still open past the first token's exp
    await a.close()
