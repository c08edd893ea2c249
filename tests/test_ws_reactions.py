"""Replies and reactions over the WebSocket (protocol.md section 5), through a real
gateway and Redis: every rule of `send.reply_to`, `react` and `unreact`."""

from __future__ import annotations

import asyncio

from tests.support import Client, stream_events, thread_of, uid


async def _pair(connect, gateway) -> tuple[Client, Client, str]:
    alice, bob = uid("a"), uid("b")
    a = await connect(gateway.ws_url, alice)
    b = await connect(gateway.ws_url, bob)
    return a, b, thread_of(alice, bob)


async def react(c: Client, thread: str, target: str, emoji: str, kind: str = "react",
                **extra: object) -> dict:
    """A react/unreact with a fresh client_msg_id (unique across a user's devices)."""
    extra.setdefault("client_msg_id", uid("r"))
    return await c.request({"type": kind, "thread": thread, "target": target, "emoji": emoji,
                            **extra})


async def test_reply_to_a_message_of_the_thread_reaches_both(shared_gateway, connect):
    a, b, _ = await _pair(connect, shared_gateway)
    first = await a.say(b.user, "question")
    reply = await b.say(a.user, "answer", reply_to=first["id"])
    assert reply["type"] == "ack"
    for c in (a, b):
        event = await c.next("event", id=reply["id"])
        assert event["event"] == {"kind": "MessageSent", "sender": b.user, "body": "answer",
                                  "client_msg_id": reply["ref"], "reply_to": first["id"]}
    # a plain send stores no reply_to at all: v1 payloads stay byte for byte the same
    plain = await a.say(b.user, "plain")
    assert "reply_to" not in (await b.next("event", id=plain["id"]))["event"]


async def test_reply_to_must_be_a_message_sent_of_the_same_thread(shared_gateway, connect, aredis,
                                                                 keys):
    a, b, thread = await _pair(connect, shared_gateway)
    carol = uid("c")
    elsewhere = await a.say(carol, "other thread")
    await asyncio.sleep(0.005)  # ids of two threads may coincide within one millisecond
    first = await a.say(b.user, "m1")
    assert first["id"] != elsewhere["id"]
    receipt = await b.request({"type": "read", "thread": thread, "up_to": first["id"]})
    for target in (elsewhere["id"], receipt["id"], "1-0", "99999999999999-0"):
        answer = await a.say(b.user, "x", reply_to=target)
        assert (answer["type"], answer["code"]) == ("error", "not_found"), target
    answer = await a.say(b.user, "x", reply_to="nope")
    assert answer["code"] == "invalid"
    # a deleted message may still be replied to
    await a.request({"type": "delete", "thread": thread, "target": first["id"]})
    assert (await b.say(a.user, "re: deleted", reply_to=first["id"]))["type"] == "ack"
    kinds = [e["kind"] for _, e in await stream_events(aredis, keys, thread)]
    assert kinds == ["MessageSent", "ReadUpTo", "MessageDeleted", "MessageSent"]


async def test_react_and_unreact_round_trip(shared_gateway, connect):
    a, b, thread = await _pair(connect, shared_gateway)
    msg = await a.say(b.user, "hello")
    added = await react(b, thread, msg["id"], "👍")
    assert added["type"] == "ack" and added["duplicate"] is False
    for c in (a, b):
        event = await c.next("event", id=added["id"])
        assert event["event"] == {"kind": "ReactionAdded", "sender": b.user,
                                  "target": msg["id"], "emoji": "👍",
                                  "client_msg_id": added["ref"]}
    removed = await react(b, thread, msg["id"], "👍", "unreact")
    assert removed["type"] == "ack" and removed["duplicate"] is False
    assert (await a.next("event", id=removed["id"]))["event"]["kind"] == "ReactionRemoved"
    # absent now: unreact is not_found, react adds it again with a new event
    again = await react(b, thread, msg["id"], "👍", "unreact")
    assert again["code"] == "not_found"
    readded = await react(b, thread, msg["id"], "👍")
    assert readded["type"] == "ack" and readded["id"] not in (added["id"], removed["id"])


async def test_duplicate_reaction_is_acked_with_the_event_that_added_it(shared_gateway, connect,
                                                                       aredis, keys):
    a, b, thread = await _pair(connect, shared_gateway)
    msg = await a.say(b.user, "hello")
    added = await react(b, thread, msg["id"], "🎉")
    again = await react(b, thread, msg["id"], "🎉")  # a new client_msg_id, same reaction
    assert (again["type"], again["id"], again["duplicate"]) == ("ack", added["id"], True)
    # the same reaction by the other participant is a reaction of its own
    theirs = await react(a, thread, msg["id"], "🎉")
    assert theirs["duplicate"] is False and theirs["id"] != added["id"]
    # a resent command (same client_msg_id) is the usual idempotent repeat
    repeat = await react(b, thread, msg["id"], "🎉", client_msg_id=added["ref"])
    assert (repeat["id"], repeat["duplicate"]) == (added["id"], True)
    kinds = [e["kind"] for _, e in await stream_events(aredis, keys, thread)]
    assert kinds == ["MessageSent", "ReactionAdded", "ReactionAdded"]


async def test_twenty_distinct_emoji_per_user_and_message(shared_gateway, connect):
    a, b, thread = await _pair(connect, shared_gateway)
    msg = await a.say(b.user, "react to me")
    for n in range(20):
        assert (await react(b, thread, msg["id"], f"e{n}"))["type"] == "ack"
    refused = await react(b, thread, msg["id"], "one-more")
    assert (refused["type"], refused["code"]) == ("error", "invalid")
    assert (await react(b, thread, msg["id"], "e3"))["duplicate"] is True  # present: fine
    assert (await react(a, thread, msg["id"], "one-more"))["type"] == "ack"  # per user
    await react(b, thread, msg["id"], "e0", "unreact")
    assert (await react(b, thread, msg["id"], "one-more"))["type"] == "ack"  # room again


async def test_react_targets_a_live_message_of_the_thread(shared_gateway, connect):
    a, b, thread = await _pair(connect, shared_gateway)
    msg = await a.say(b.user, "soon gone")
    await react(b, thread, msg["id"], "👍")
    receipt = await b.request({"type": "read", "thread": thread, "up_to": msg["id"]})
    assert (await react(b, thread, receipt["id"], "👍"))["code"] == "not_found"
    assert (await react(b, thread, "1-1", "👍"))["code"] == "not_found"
    await a.request({"type": "delete", "thread": thread, "target": msg["id"]})
    assert (await react(b, thread, msg["id"], "❤"))["code"] == "not_found"
    # a deleted message keeps no reactions: the one present before is gone too
    assert (await react(b, thread, msg["id"], "👍", "unreact"))["code"] == "not_found"
    outsider = await connect(shared_gateway.ws_url, uid("x"))
    assert (await react(outsider, thread, msg["id"], "👍"))["code"] == "forbidden"


async def test_emoji_rules(shared_gateway, connect):
    a, b, thread = await _pair(connect, shared_gateway)
    msg = await a.say(b.user, "emoji")
    for good in ("👍", "👍🏽", "👨‍👩‍👧", "❤️", "x" * 16, "+1", ":tada:"):
        assert (await react(b, thread, msg["id"], good))["type"] == "ack", good
    for bad in ("", "x" * 17, "a b", "\t", "\x00", "👍\n", "\x7f"):
        answer = await react(b, thread, msg["id"], bad)
        assert (answer["type"], answer["code"]) == ("error", "invalid"), repr(bad)
    answer = await b.request({"type": "react", "thread": thread, "target": msg["id"], "emoji": 1})
    assert answer["code"] == "bad_frame"
    assert (await b.say(a.user, "still usable"))["type"] == "ack"


async def test_concurrent_reacts_of_one_emoji_append_once(shared_gateway, connect, aredis, keys):
    """Many sockets of one user race to add (then remove) the same reaction: one event
    each way, every other answer a duplicate or not_found, never two ReactionAdded."""
    for _ in range(5):
        a, b, thread = await _pair(connect, shared_gateway)
        msg = await a.say(b.user, "race")
        devices = [await connect(shared_gateway.ws_url, b.user) for _ in range(6)]
        answers = await asyncio.gather(*(react(d, thread, msg["id"], "🔥") for d in devices))
        assert sum(not x["duplicate"] for x in answers) == 1
        assert len({x["id"] for x in answers}) == 1
        removals = await asyncio.gather(
            *(react(d, thread, msg["id"], "🔥", "unreact") for d in devices))
        assert sum(x["type"] == "ack" for x in removals) == 1
        assert all(x.get("code") == "not_found" for x in removals if x["type"] == "error")
        kinds = [e["kind"] for _, e in await stream_events(aredis, keys, thread)]
        assert kinds == ["MessageSent", "ReactionAdded", "ReactionRemoved"]


async def test_concurrent_distinct_emoji_respect_the_cap(shared_gateway, connect, aredis, keys):
    a, b, thread = await _pair(connect, shared_gateway)
    msg = await a.say(b.user, "cap race")
    devices = [await connect(shared_gateway.ws_url, b.user) for _ in range(5)]
    answers = await asyncio.gather(*(react(devices[n % 5], thread, msg["id"], f"r{n}")
                                     for n in range(30)))
    assert sum(x["type"] == "ack" for x in answers) == 20
    assert all(x["code"] == "invalid" for x in answers if x["type"] == "error")
    added = [e for _, e in await stream_events(aredis, keys, thread)
             if e["kind"] == "ReactionAdded"]
    assert len(added) == 20
