"""protocol.md section 5, Presence: only users who share a thread with the watcher and
where neither blocked the other are reported; strangers, blocked users and users who do
not exist get the same single answer (``online:false, last_seen:null``), over the
WebSocket and over HTTP. Blocks are written as the record format has them."""

from __future__ import annotations

import asyncio

import httpx

from adapters.record import Keys
from tests.presence_support import HIDDEN, befriend, block, next_presence, presences, quiet, shape
from tests.support import Client, thread_of, token, uid


async def test_strangers_and_blocked_users_look_like_nobody(start_gateway, aredis, prefix):
    """Attacks: a stranger's or a blocked user's real status leaking (first answer or a
    later change), in either direction of a block."""
    gw = start_gateway(DUOLOGUE_PRESENCE_LEASE="3")
    keys = Keys(prefix)
    alice, friend, stranger, blocker, blocked, nobody = (
        uid("a"), uid("f"), uid("s"), uid("x"), uid("y"), uid("n"))
    watcher = await Client.connect(gw.ws_url, alice)
    for other in (friend, blocker, blocked):
        await befriend(watcher, other)
    await block(aredis, keys, blocker, alice)  # blocker blocked alice
    await block(aredis, keys, alice, blocked)  # alice blocked `blocked`
    online = [await Client.connect(gw.ws_url, u) for u in (friend, stranger, blocker, blocked)]
    hidden = [stranger, blocker, blocked, nobody]
    await watcher.send({"type": "watch", "users": [friend, *hidden]})
    assert shape(await next_presence(watcher, friend)) == {"online": True, "last_seen": None}
    for user in hidden:
        assert shape(await next_presence(watcher, user)) == HIDDEN, user
    for _ in range(2):  # their changes, across sweeps (1 s with this lease), never reach alice
        for client in online[1:]:
            await client.close()
        await asyncio.sleep(1.5)
        online[1:] = [await Client.connect(gw.ws_url, u) for u in (stranger, blocker, blocked)]
        await asyncio.sleep(1.5)
    assert [f for f in presences(watcher) if f["user"] in hidden] == []

    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        users = ",".join([friend, *hidden])
        answer = await http.get("/v1/presence", params={"users": users},
                                headers={"Authorization": f"Bearer {token(alice)}"})
    assert answer.status_code == 200
    assert answer.json() == {"presence": [
        {"user": friend, "online": True, "last_seen": None},
        *({"user": u, **HIDDEN} for u in hidden)]}
    for client in [watcher, *online]:
        await client.close()


async def test_a_block_after_the_watch_stops_reporting(start_gateway, aredis, prefix):
    """Attacks: visibility checked only when the watch was made: after a block the
    blocked user's changes must not reach the watcher; the watcher gets the hidden answer
    once (at a sweep), and the user's status again after the unblock."""
    gw = start_gateway(DUOLOGUE_PRESENCE_LEASE="3")
    keys = Keys(prefix)
    alice, bob = uid("a"), uid("b")
    watcher = await Client.connect(gw.ws_url, alice)
    await befriend(watcher, bob)
    user = await Client.connect(gw.ws_url, bob)
    await watcher.send({"type": "watch", "users": [bob]})
    assert (await next_presence(watcher, bob))["online"] is True
    await block(aredis, keys, bob, alice)
    await user.close()  # a change after the block: never reported as such
    assert shape(await next_presence(watcher, bob, 3.0)) == HIDDEN
    await quiet(watcher, bob, 2.5)  # once, never again
    await aredis.hdel(keys.state(f"dm:{min(alice, bob)}:{max(alice, bob)}"), f"b:{bob}")
    frame = await next_presence(watcher, bob, 3.0)  # the next sweep: visible again
    assert frame["online"] is False and frame["last_seen"] is not None
    await watcher.close()


async def test_a_thread_started_after_the_watch_makes_the_user_visible(start_gateway):
    """Attacks: a stranger's hidden answer kept forever once a thread exists."""
    gw = start_gateway(DUOLOGUE_PRESENCE_LEASE="3")
    alice, bob = uid("a"), uid("b")
    watcher = await Client.connect(gw.ws_url, alice)
    user = await Client.connect(gw.ws_url, bob)
    await watcher.send({"type": "watch", "users": [bob]})
    assert shape(await next_presence(watcher, bob)) == HIDDEN
    await befriend(user, alice)
    assert shape(await next_presence(watcher, bob, 3.0)) == {"online": True, "last_seen": None}
    await watcher.close()
    await user.close()


async def test_block_frames_hide_presence_both_ways(start_gateway):
    """The same rule with real `block`/`unblock` commands (not a written record): after
    either participant blocks, neither sees the other's presence; after the unblock,
    both do again."""
    gw = start_gateway(DUOLOGUE_PRESENCE_LEASE="3")
    alice, bob = uid("a"), uid("b")
    a = await Client.connect(gw.ws_url, alice)
    b = await Client.connect(gw.ws_url, bob)
    await befriend(a, bob)
    thread = thread_of(alice, bob)
    blocked = await b.request({"type": "block", "thread": thread, "client_msg_id": uid("k")})
    assert blocked["type"] == "ack", blocked
    for watcher, other in ((a, bob), (b, alice)):
        await watcher.send({"type": "watch", "users": [other]})
        assert shape(await next_presence(watcher, other)) == HIDDEN
    await b.request({"type": "unblock", "thread": thread, "client_msg_id": uid("k")})
    for watcher, other in ((a, bob), (b, alice)):
        await watcher.send({"type": "watch", "users": []})
        await watcher.send({"type": "watch", "users": [other]})
        assert shape(await next_presence(watcher, other)) == {"online": True, "last_seen": None}
    await a.close()
    await b.close()
