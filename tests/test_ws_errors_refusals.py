"""protocol.md section 2, Errors: `forbidden`, `not_found`, `rate_limited` (with
retry_after_ms; and the token bucket on its own), `unavailable`, and idempotent resends.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt

from tests.support import SECRET, Client, thread_of, token, uid
from tests.ws_errors_support import assert_error, assert_usable, opened, settle

# -- forbidden ----------------------------------------------------------------------------


async def test_forbidden_for_a_third_user(shared_gateway):
    alice, bob, carol = uid("a"), uid("b"), uid("c")
    thread = thread_of(alice, bob)
    async with opened(shared_gateway.ws_url, alice, bob, carol) as (a, b, c):
        sent = await a.say(bob, "private")
        await b.next("event", id=sent["id"], timeout=5)
        await a.next("event", id=sent["id"], timeout=5)
        a.frames.clear()
        b.frames.clear()
        for target in (sent["id"], "1-0"):  # a real target and a missing one: no leak
            commands = [
                {"type": "send", "thread": thread, "body": "intrude"},
                {"type": "edit", "thread": thread, "target": target, "body": "x"},
                {"type": "delete", "thread": thread, "target": target},
                {"type": "read", "thread": thread, "up_to": target},
            ]
            for command in commands:
                answer = await c.request(command)
                assert_error(answer, "forbidden", command["client_msg_id"])
        await c.send({"type": "sync", "thread": thread, "after": "0"})
        assert_error(await c.next("error", timeout=5), "forbidden", None)
        await c.send({"type": "typing", "thread": thread})
        assert_error(await c.next("error", timeout=5), "forbidden", None)
        ack = await assert_usable(c, alice)
        await a.next("event", id=ack["id"], timeout=5)
        await settle()
        # isolation: carol learned nothing about the thread, alice and bob got nothing from her
        assert not [f for f in c.frames if f.get("thread") == thread], c.frames
        assert not [f for f in a.frames + b.frames if f.get("thread") == thread]
        assert not [f for f in b.frames if f.get("type") == "typing"]


async def test_forbidden_to_change_another_users_message(shared_gateway):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    async with opened(shared_gateway.ws_url, alice, bob) as (a, b):
        sent = await a.say(bob, "mine")
        await b.next("event", id=sent["id"], timeout=5)
        edit = await b.request({"type": "edit", "thread": thread, "target": sent["id"],
                                "body": "yours now"})
        assert_error(edit, "forbidden", edit["ref"])
        delete = await b.request({"type": "delete", "thread": thread, "target": sent["id"]})
        assert_error(delete, "forbidden", delete["ref"])
        await settle()
        assert a.events() == [] or all(e["id"] == sent["id"] for e in a.events())
        # the message is intact: its sender can still edit it
        edited = await a.request({"type": "edit", "thread": thread, "target": sent["id"],
                                  "body": "still mine"})
        assert edited["type"] == "ack"


async def test_refresh_with_another_users_token_is_forbidden(shared_gateway):
    alice, bob = uid("a"), uid("b")
    async with opened(shared_gateway.ws_url, alice) as (a,):
        await a.send({"type": "refresh", "token": token(bob)})
        assert_error(await a.next("error", timeout=5), "forbidden", None)
        fresh = token(alice, 7200)
        await a.send({"type": "refresh", "token": fresh})
        refreshed = await a.next("refreshed", timeout=5)
        assert refreshed["exp"] == jwt.decode(fresh, SECRET, algorithms=["HS256"])["exp"]


# -- not_found ----------------------------------------------------------------------------


async def test_not_found_targets(shared_gateway):
    alice, bob, carol = uid("a"), uid("b"), uid("c")
    thread = thread_of(alice, bob)
    async with opened(shared_gateway.ws_url, alice, bob) as (a, b):
        elsewhere = await a.say(carol, "other thread")  # an id that exists, elsewhere
        sent = await a.say(bob, "one")
        edited = await a.request({"type": "edit", "thread": thread, "target": sent["id"],
                                  "body": "one!"})
        gone = await a.say(bob, "two")
        deleted = await a.request({"type": "delete", "thread": thread, "target": gone["id"]})
        read = await b.request({"type": "read", "thread": thread, "up_to": sent["id"]})
        for ack in (elsewhere, sent, edited, gone, deleted, read):
            assert ack["type"] == "ack", ack
        before = {e["id"] for e in await _all_events(b, 5)}
        missing = ["1-0", "0-1"]  # and an id of another thread, unless it exists here too
        missing += [elsewhere["id"]] if elsewhere["id"] not in before else []
        not_messages = [edited["id"], deleted["id"], read["id"]]  # events, but no MessageSent
        for target in [*missing, *not_messages, gone["id"]]:
            for command in ({"type": "edit", "thread": thread, "target": target, "body": "x"},
                            {"type": "delete", "thread": thread, "target": target}):
                answer = await a.request(command)
                assert_error(answer, "not_found", command["client_msg_id"])
        for target in missing:
            answer = await b.request({"type": "read", "thread": thread, "up_to": target})
            assert_error(answer, "not_found", answer["ref"])
        await assert_usable(a, bob)
        after = await _all_events(b, 1)
        assert len(after) == 1 and after[0]["id"] not in before, after


async def _all_events(client: Client, count: int) -> list[dict[str, Any]]:
    """Wait for ``count`` events on ``client`` and take them (and only them)."""
    got = [await client.next("event", timeout=5) for _ in range(count)]
    await settle(0.1)
    extra = client.events()
    assert extra == [], extra
    return got


async def test_forbidden_and_not_found_do_not_count_toward_close(shared_gateway):
    alice, bob, carol = uid("a"), uid("b"), uid("c")
    thread = thread_of(alice, bob)
    async with opened(shared_gateway.ws_url, carol, alice) as (c, a):
        for n in range(15):
            answer = await c.request({"type": "send", "thread": thread, "body": f"x{n}"})
            assert_error(answer, "forbidden", answer["ref"])
        sent = await a.say(carol, "hi")
        for n in range(15):
            answer = await c.request({"type": "delete", "thread": sent["thread"],
                                      "target": f"1-{n}"})
            assert_error(answer, "not_found", answer["ref"])
        await assert_usable(c, alice)
        assert not c.reader.done()


# -- rate_limited -------------------------------------------------------------------------


async def test_rate_limited(start_gateway):
    gateway = start_gateway(DUOLOGUE_RATE="5", DUOLOGUE_BURST="10")
    alice, bob = uid("a"), uid("b")
    async with opened(gateway.ws_url, alice, alice, bob) as (a, a2, b):
        cmids = [f"burst-{n}" for n in range(16)]
        started = time.monotonic()
        for cmid in cmids:
            await a.send({"type": "send", "to": bob, "body": cmid, "client_msg_id": cmid})
        answers = [await a.wait_for(lambda f, c=cmid: f.get("ref") == c
                                    and f.get("type") in ("ack", "error"), 5)
                   for cmid in cmids]
        # the limit is per user: the second connection of the same user is limited too
        for n in range(5):
            await a2.send({"type": "send", "to": bob, "body": f"a2-{n}",
                           "client_msg_id": f"a2-{n}"})
        answers += [await a2.wait_for(lambda f, c=f"a2-{n}": f.get("ref") == c
                                      and f.get("type") in ("ack", "error"), 5)
                    for n in range(5)]
        refill = int((time.monotonic() - started) * 5) + 1  # tokens that may have come back
        acked = [f for f in answers if f["type"] == "ack"]
        limited = [f for f in answers if f["type"] == "error"]
        assert 10 <= len(acked) <= 10 + refill, answers
        assert any(f["ref"].startswith("a2-") for f in limited), answers
        for error in limited:
            assert error["code"] == "rate_limited", error
            retry = error["retry_after_ms"]
            assert type(retry) is int and retry > 0, error
        await asyncio.sleep(limited[-1]["retry_after_ms"] / 1000)
        # after waiting retry_after_ms the next command is accepted; a refused
        # client_msg_id was never recorded, so it is a first send now
        refused = next(f["ref"] for f in limited if f["ref"].startswith("burst-"))
        retried = await a.say(bob, "retried", client_msg_id=refused)
        assert retried["type"] == "ack" and retried["duplicate"] is False, retried
        accepted = {f["id"] for f in acked} | {retried["id"]}
        got = [await b.next("event", timeout=5) for _ in accepted]
        await settle(0.5)
        assert {e["id"] for e in got} == accepted
        assert b.events() == [], "refused commands were appended"
        bodies = sorted(e["event"]["body"] for e in got)
        assert bodies == sorted([f["ref"] for f in acked] + ["retried"])
        # rate_limited refusals do not count toward the 1008 close
        flood = [f"flood-{n}" for n in range(40)]
        for cmid in flood:
            await a.send({"type": "send", "to": bob, "body": "f", "client_msg_id": cmid})
        answers = [await a.wait_for(lambda f, c=cmid: f.get("ref") == c
                                    and f.get("type") in ("ack", "error"), 5) for cmid in flood]
        limited = [f for f in answers if f["type"] == "error"]
        assert len(limited) > 21 and {f["code"] for f in limited} == {"rate_limited"}
        await asyncio.sleep(limited[-1]["retry_after_ms"] / 1000)
        assert not a.reader.done(), a.ws.close_code
        await assert_usable(a, bob)


# -- unavailable --------------------------------------------------------------------------


async def test_unavailable_when_the_store_is_down(start_gateway, private_redis):
    gateway = start_gateway(REDIS_URL=private_redis.url)
    alice, bob = uid("a"), uid("b")
    async with opened(gateway.ws_url, alice) as (a,):
        assert (await a.say(bob, "before"))["type"] == "ack"
        private_redis.stop()
        answer = await asyncio.wait_for(a.say(bob, "during", client_msg_id="down-1"), 15)
        assert_error(answer, "unavailable", "down-1")
        private_redis.start()
        deadline = time.monotonic() + 10
        while True:  # retry with the same client_msg_id until the store is back
            answer = await a.say(bob, "during", client_msg_id="down-1")
            if answer["type"] == "ack" or time.monotonic() > deadline:
                break
            assert_error(answer, "unavailable", "down-1")
            await asyncio.sleep(0.2)
        assert answer["type"] == "ack" and answer["duplicate"] is False, answer


# -- idempotency --------------------------------------------------------------------------


async def test_idempotent_resend(shared_gateway):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    async with opened(shared_gateway.ws_url, alice, bob) as (a, b):
        first = await a.say(bob, "once", client_msg_id="same-1")
        assert first["type"] == "ack" and first["duplicate"] is False
        again = await a.say(bob, "once", client_msg_id="same-1")
        by_thread = await a.request({"type": "send", "thread": thread, "body": "changed",
                                     "client_msg_id": "same-1"})
        for repeat in (again, by_thread):
            assert repeat["type"] == "ack" and repeat["duplicate"] is True, repeat
            assert (repeat["id"], repeat["thread"], repeat["ts"]) == \
                (first["id"], first["thread"], first["ts"])
        # same client_msg_id, another thread, or another sender: new commands
        elsewhere = await a.say(alice, "note", client_msg_id="same-1")
        # (another thread's stream: its first id may equal the other's, appended in the same
        # millisecond; the pair thread-and-id tells them apart)
        assert elsewhere["duplicate"] is False
        assert (elsewhere["thread"], elsewhere["id"]) != (first["thread"], first["id"])
        from_bob = await b.say(alice, "reply", client_msg_id="same-1")
        assert from_bob["duplicate"] is False and from_bob["id"] != first["id"]
        edit = {"type": "edit", "thread": thread, "target": first["id"], "body": "edited",
                "client_msg_id": "same-edit"}
        edited = await a.request(dict(edit))
        edited_again = await a.request(dict(edit))
        assert edited_again["id"] == edited["id"] and edited_again["duplicate"] is True
        got = [await b.next("event", thread=thread, timeout=5) for _ in range(3)]
        await settle(0.5)
        assert [e["id"] for e in got] == [first["id"], from_bob["id"], edited["id"]]
        assert b.events(thread) == [], "a repeated command was delivered twice"


