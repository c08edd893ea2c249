"""Blocks and reactions across the hot and the cold tier (protocol.md sections 5 and 7):
retention trims a thread to a few events or removes an idle one from Redis, and Redis
loses its data; a block still holds, and reactions on messages only the archive holds
still answer duplicate / not_found as the contract says."""

from __future__ import annotations

import asyncio

import pytest

from adapters.record import BLOCKED, REACTIONS
from tests.projection_support import PARTITIONS, assert_projection
from tests.record_support import merged_history
from tests.support import thread_of, uid


@pytest.fixture
def tiers(start_gateway, fresh_database):
    return start_gateway(DUOLOGUE_PARTITIONS=str(PARTITIONS), DATABASE_URL=fresh_database)


async def cmd(c, kind: str, thread: str, **fields: object) -> dict:
    return await c.request({"type": kind, "thread": thread, "client_msg_id": uid("k"), **fields})


async def test_reactions_on_trimmed_messages_come_from_the_archive(
        tiers, fleet, connect, rclient, db, pkeys):
    alice, bob = uid("a"), uid("b")
    a, b = await connect(tiers.ws_url, alice), await connect(tiers.ws_url, bob)
    thread = thread_of(alice, bob)
    old = await a.say(bob, "old message")
    liked = await cmd(b, "react", thread, target=old["id"], emoji="👍")
    await cmd(b, "react", thread, target=old["id"], emoji="🎉")
    await cmd(b, "unreact", thread, target=old["id"], emoji="🎉")
    for n in range(12):
        await a.say(bob, f"filler {n}")
    fleet.burst(DUOLOGUE_RETAIN_EVENTS="3")
    assert rclient.xrange(pkeys.stream(thread), old["id"], old["id"]) == []  # trimmed
    field = f"{REACTIONS}{old['id']}:{bob}"
    assert rclient.hget(pkeys.state(thread), field) is None  # left with its message
    # the archive answers: the present reaction is a duplicate, the removed one is absent
    again = await cmd(b, "react", thread, target=old["id"], emoji="👍")
    assert (again["id"], again["duplicate"]) == (liked["id"], True)
    assert (await cmd(b, "unreact", thread, target=old["id"], emoji="🎉"))["code"] == "not_found"
    removed = await cmd(b, "unreact", thread, target=old["id"], emoji="👍")
    assert removed["type"] == "ack" and removed["duplicate"] is False
    # ... and from now on Redis holds that user's reactions on the message again
    assert (await cmd(b, "unreact", thread, target=old["id"], emoji="👍"))["code"] == "not_found"
    added = await cmd(b, "react", thread, target=old["id"], emoji="❤")
    assert added["duplicate"] is False
    fleet.burst()
    assert_projection(db, {thread: merged_history(db, rclient, pkeys, thread)})
    rows = db.execute('SELECT "user", emoji FROM reactions WHERE thread = %s', (thread,))
    assert rows.fetchall() == [(bob, "❤")]


async def test_a_block_holds_after_the_idle_thread_left_redis(
        tiers, fleet, connect, rclient, pkeys):
    alice, bob = uid("a"), uid("b")
    a, b = await connect(tiers.ws_url, alice), await connect(tiers.ws_url, bob)
    thread = thread_of(alice, bob)
    await a.say(bob, "hi")
    blocked = await cmd(a, "block", thread)
    await asyncio.sleep(1.2)
    fleet.burst(DUOLOGUE_RETAIN_IDLE="1")
    assert not rclient.exists(pkeys.stream(thread))
    assert rclient.hgetall(pkeys.state(thread)) == {
        f"{BLOCKED}{alice}".encode(): blocked["id"].encode()}  # the block, nothing else
    assert (await b.say(alice, "still blocked?"))["code"] == "blocked"
    again = await cmd(a, "block", thread)
    assert (again["id"], again["duplicate"]) == (blocked["id"], True)
    lifted = await cmd(a, "unblock", thread)
    assert lifted["duplicate"] is False
    assert (await b.say(alice, "open again"))["type"] == "ack"


async def test_blocks_come_back_after_redis_lost_the_thread(
        tiers, fleet, connect, rclient, db, pkeys):
    """Redis loses every key of the thread (a restart from an old snapshot): the seal
    restores the block from the projection before any command sees the partition."""
    alice, bob = uid("a"), uid("b")
    a, b = await connect(tiers.ws_url, alice), await connect(tiers.ws_url, bob)
    thread = thread_of(alice, bob)
    first = await a.say(bob, "hi")
    blocked = await cmd(b, "block", thread)
    await cmd(a, "block", thread)
    lifted = await cmd(a, "unblock", thread)
    await cmd(b, "react", thread, target=first["id"], emoji="👍")
    fleet.burst()
    part = pkeys.partition(thread)
    rclient.delete(pkeys.stream(thread), pkeys.state(thread), pkeys.index(part, alice),
                   pkeys.index(part, bob), pkeys.log(part))
    rclient.delete(pkeys.epoch(part))  # as after a restart: the partition needs a seal
    fleet.burst()
    assert (await a.say(bob, "blocked?"))["code"] == "blocked"
    again = await cmd(a, "unblock", thread)
    assert (again["id"], again["duplicate"]) == (lifted["id"], True)
    dup = await cmd(b, "block", thread)
    assert (dup["id"], dup["duplicate"]) == (blocked["id"], True)
    react = await cmd(b, "react", thread, target=first["id"], emoji="👍")
    assert react["duplicate"] is True
    await cmd(b, "unblock", thread)
    assert (await a.say(bob, "open")).get("type") == "ack"
    fleet.burst()
    assert_projection(db, {thread: merged_history(db, rclient, pkeys, thread)})
