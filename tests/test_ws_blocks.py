"""Blocking over the WebSocket and HTTP (protocol.md section 5, Blocking): every
combination of who blocks, what the other participant may still do, and unblocking."""

from __future__ import annotations

import asyncio

import httpx

from tests.support import Client, stream_events, thread_of, token, uid


async def _pair(connect, gateway) -> tuple[Client, Client, str]:
    alice, bob = uid("a"), uid("b")
    return (await connect(gateway.ws_url, alice), await connect(gateway.ws_url, bob),
            thread_of(alice, bob))


async def command(c: Client, kind: str, thread: str, **fields: object) -> dict:
    fields.setdefault("client_msg_id", uid("k"))
    return await c.request({"type": kind, "thread": thread, **fields})


async def test_block_refuses_the_other_participants_writes_only(shared_gateway, connect):
    a, b, thread = await _pair(connect, shared_gateway)
    mine = await a.say(b.user, "from alice")
    theirs = await b.say(a.user, "from bob")
    await command(a, "react", thread, target=theirs["id"], emoji="👍")
    blocked = await command(a, "block", thread)
    assert blocked["type"] == "ack" and blocked["duplicate"] is False
    for c in (a, b):  # both participants see the event
        event = await c.next("event", id=blocked["id"])
        assert event["event"] == {"kind": "ThreadBlocked", "by": a.user,
                                  "client_msg_id": blocked["ref"]}
    # bob, blocked: send, edit, react refused with `blocked`
    assert (await b.say(a.user, "let me in"))["code"] == "blocked"
    assert (await command(b, "edit", thread, target=theirs["id"], body="x"))["code"] == "blocked"
    assert (await command(b, "react", thread, target=mine["id"], emoji="😡"))["code"] == "blocked"
    # ... delete, unreact, read and sync still work for him
    assert (await command(b, "read", thread, up_to=mine["id"]))["type"] == "ack"
    assert (await command(b, "delete", thread, target=theirs["id"]))["type"] == "ack"
    await b.send({"type": "sync", "thread": thread, "after": "0"})
    assert (await b.next("synced", thread=thread))["recovered"] is True
    # alice, the blocker, may still do everything
    assert (await a.say(b.user, "I can still write"))["type"] == "ack"
    edited = await command(a, "edit", thread, target=mine["id"], body="edited")
    assert edited["type"] == "ack"


async def test_blocked_participants_typing_is_dropped(shared_gateway, connect):
    a, b, thread = await _pair(connect, shared_gateway)
    await a.say(b.user, "hi")
    await b.send({"type": "typing", "thread": thread})
    await a.next("typing", thread=thread, user=b.user)
    await command(a, "block", thread)
    for _ in range(3):
        await b.send({"type": "typing", "thread": thread})
    await a.send({"type": "typing", "thread": thread})  # the blocker's typing still goes
    await b.next("typing", thread=thread, user=a.user)
    assert (await b.say(a.user, "blocked?"))["code"] == "blocked"  # frames in order: typing done
    await asyncio.sleep(0.2)
    assert not [f for f in a.frames if f.get("type") == "typing"]
    assert [f for f in b.frames if f.get("type") == "error"] == []  # no error for typing


async def test_duplicate_block_and_unblock_answers(shared_gateway, connect, aredis, keys):
    a, b, thread = await _pair(connect, shared_gateway)
    await a.say(b.user, "hi")
    never = await command(a, "unblock", thread)  # never blocked
    assert (never["type"], never["id"], never["duplicate"], never["ts"]) == ("ack", "0", True, 0)
    first = await command(a, "block", thread)
    again = await command(a, "block", thread)
    assert (again["id"], again["duplicate"]) == (first["id"], True)
    lifted = await command(a, "unblock", thread)
    assert lifted["duplicate"] is False and lifted["id"] != first["id"]
    assert (await a.next("event", id=lifted["id"]))["event"]["kind"] == "ThreadUnblocked"
    repeat = await command(a, "unblock", thread)
    assert (repeat["id"], repeat["duplicate"]) == (lifted["id"], True)
    kinds = [e["kind"] for _, e in await stream_events(aredis, keys, thread)]
    assert kinds == ["MessageSent", "ThreadBlocked", "ThreadUnblocked"]


async def test_both_block_one_unblocks(shared_gateway, connect):
    a, b, thread = await _pair(connect, shared_gateway)
    await a.say(b.user, "hi")
    await command(a, "block", thread)
    await command(b, "block", thread)
    assert (await a.say(b.user, "x"))["code"] == "blocked"
    assert (await b.say(a.user, "x"))["code"] == "blocked"
    await command(a, "unblock", thread)  # bob's block stands: alice still may not write
    assert (await a.say(b.user, "x"))["code"] == "blocked"
    assert (await b.say(a.user, "bob may write again"))["type"] == "ack"
    await command(b, "unblock", thread)  # open again for both
    assert (await a.say(b.user, "open"))["type"] == "ack"
    # a user's unblock lifts only their own block
    await command(b, "block", thread)
    assert (await command(a, "unblock", thread))["duplicate"] is True
    assert (await a.say(b.user, "x"))["code"] == "blocked"


async def test_block_rules(shared_gateway, connect):
    a, b, thread = await _pair(connect, shared_gateway)
    self_thread = thread_of(a.user, a.user)
    assert (await command(a, "block", self_thread))["code"] == "invalid"
    assert (await command(a, "unblock", self_thread))["code"] == "invalid"
    outsider = await connect(shared_gateway.ws_url, uid("x"))
    assert (await command(outsider, "block", thread))["code"] == "forbidden"
    assert (await command(a, "block", "dm:nope"))["code"] == "invalid"
    await a.send({"type": "block", "thread": thread})  # no client_msg_id
    assert (await a.next("error"))["code"] == "bad_frame"
    # a thread with no event yet can be blocked before anyone writes
    assert (await command(a, "block", thread))["type"] == "ack"
    assert (await b.say(a.user, "first words"))["code"] == "blocked"


async def test_block_races_with_sends(shared_gateway, connect, aredis, keys):
    """Sends of the blocked participant racing the block: every send acked is in the
    stream before the ThreadBlocked, every one after it is refused, none is lost."""
    for _ in range(5):
        a, b, thread = await _pair(connect, shared_gateway)
        await a.say(b.user, "hi")
        cmids = [uid("s") for _ in range(30)]
        answers, blocked = await asyncio.gather(_sends(b, a.user, cmids),
                                                command(a, "block", thread))
        stream = await stream_events(aredis, keys, thread)
        at = next(n for n, (i, _) in enumerate(stream) if i == blocked["id"])
        before = {e["client_msg_id"] for _, e in stream[:at] if e["kind"] == "MessageSent"}
        after = [e for _, e in stream[at + 1:]]
        acked = {x["ref"] for x in answers if x["type"] == "ack"}
        assert after == []
        assert acked == before & set(cmids)
        assert all(x["code"] == "blocked" for x in answers if x["type"] == "error")


async def test_http_post_of_a_blocked_participant_is_403_blocked(shared_gateway, connect):
    a, b, thread = await _pair(connect, shared_gateway)
    await a.say(b.user, "hi")
    await command(a, "block", thread)
    async with httpx.AsyncClient(base_url=shared_gateway.http_url, timeout=10) as http:
        answer = await http.post(f"/v1/threads/{thread}/messages",
                                 json={"body": "x", "client_msg_id": uid("h")},
                                 headers={"Authorization": f"Bearer {token(b.user)}"})
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "blocked"
        ok = await http.post(f"/v1/threads/{thread}/messages",
                             json={"body": "mine", "client_msg_id": uid("h")},
                             headers={"Authorization": f"Bearer {token(a.user)}"})
        assert ok.status_code == 201


async def _sends(c: Client, to: str, cmids: list[str]) -> list[dict]:
    return [await c.say(to, cmid, client_msg_id=cmid) for cmid in cmids]
