"""Redis as the hot tier over the Postgres archive (protocol.md section 7).

A real gateway (with the archive behind it) and real projector processes with tiny
retention settings: streams shrink to the bound, only archived events leave Redis,
``sync`` is gapless across both tiers, commands may target archive-only events, idle
threads leave (almost) nothing in Redis, and a re-created stream continues above every
id the thread ever had.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from adapters.record import ARCHIVED_BELOW
from domain.ids import event_key
from tests.ops_support import duologue
from tests.projection_support import PARTITIONS, assert_projection, dead_letters
from tests.record_support import merged_history, sync_all
from tests.support import Client, seen, thread_of, uid

RETAIN = "5"


@pytest.fixture
def tiers(start_gateway, fresh_database):
    """A gateway that reads the archive of this test's database."""
    return start_gateway(DUOLOGUE_PARTITIONS=str(PARTITIONS), DATABASE_URL=fresh_database)


async def converse(a: Client, b: Client, rounds: int) -> list[str]:
    """Sends, edits, deletes and receipts from both sides; every acked id, in order, once
    both sockets have its live frame (an ack may come before its event)."""
    ids: list[str] = []
    thread = thread_of(a.user, b.user)
    for n in range(rounds):
        for me, other in ((a, b), (b, a)):
            ack = await me.say(other.user, f"{me.user} #{n}")
            assert ack["type"] == "ack", ack
            ids.append(ack["id"])
        if n % 4 == 1:
            edited = await a.request({"type": "edit", "thread": thread, "target": ids[-2],
                                      "body": f"edited #{n}"})
            ids.append(edited["id"])
        if n % 4 == 2:
            gone = await b.request({"type": "delete", "thread": thread, "target": ids[-1]})
            ids.append(gone["id"])
        if n % 4 == 3:
            read = await a.request({"type": "read", "thread": thread, "up_to": ids[-1]})
            ids.append(read["id"])
    for client in (a, b):  # every live frame is in: none may land in a later sync's replay
        for event_id in ids:
            await seen(client, lambda f, i=event_id: f.get("type") == "event" and f["id"] == i)
    return ids


def stream_ids(rclient, pkeys, thread: str) -> list[str]:
    return [i.decode() for i, _ in rclient.xrange(pkeys.stream(thread))]


async def test_streams_keep_the_newest_events_and_sync_stays_gapless_across_tiers(
        tiers, fleet, rclient, db, pkeys):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a, b = await Client.connect(tiers.ws_url, alice), await Client.connect(tiers.ws_url, bob)
    try:
        ids = await converse(a, b, 12)
        assert len(ids) == 33
        fleet.burst(DUOLOGUE_RETAIN_EVENTS=RETAIN)
        # only archived events left, and the newest five stayed
        assert stream_ids(rclient, pkeys, thread) == ids[-5:]
        lo = rclient.hget(pkeys.state(thread), ARCHIVED_BELOW).decode()
        assert event_key(ids[-6]) < event_key(lo) <= event_key(ids[-5])
        archived = [i for i, in db.execute(
            "SELECT id FROM events WHERE thread = %s ORDER BY key", (thread,))]
        assert archived == ids

        for after, want in (("0", ids), (ids[9], ids[10:]), (ids[-6], ids[-5:]),
                            (ids[-5], ids[-4:]), (ids[-1], [])):
            events, synced = await sync_all(a, thread, after)
            assert [e["id"] for e in events] == want, after
            assert synced == {"type": "synced", "thread": thread,
                              "last_id": want[-1] if want else after, "recovered": True}
        # byte for byte the frames the stream would have given (the archive re-encodes)
        events, _ = await sync_all(b, thread)
        live = {i: p for i, p in merged_history(db, rclient, pkeys, thread)}
        for frame in events:
            assert frame["event"] == json.loads(live[frame["id"]]), frame

        # commands on events that only the archive still holds
        first_of_alice = ids[0]
        edit = await a.request({"type": "edit", "thread": thread, "target": first_of_alice,
                                "body": "edited long after"})
        assert edit["type"] == "ack" and not edit["duplicate"], edit
        events, _ = await sync_all(a, thread)
        deletes = [e["event"]["target"] for e in events
                   if e["event"]["kind"] == "MessageDeleted"
                   and event_key(e["event"]["target"]) < event_key(lo)]
        assert deletes, "the conversation deleted a message that is now archive-only"
        deleted_target = deletes[0]
        sender = next(e["event"]["sender"] for e in events if e["id"] == deleted_target)
        me = a if sender == alice else b
        for frame in ({"type": "edit", "thread": thread, "target": deleted_target, "body": "x"},
                      {"type": "delete", "thread": thread, "target": deleted_target}):
            answer = await me.request(frame)
            assert answer["type"] == "error" and answer["code"] == "not_found", answer
        not_mine = await b.request({"type": "edit", "thread": thread, "target": first_of_alice,
                                    "body": "not mine"})
        assert not_mine["code"] == "forbidden", not_mine
        gone = await a.request({"type": "delete", "thread": thread, "target": first_of_alice})
        assert gone["type"] == "ack", gone
        again = await a.request({"type": "edit", "thread": thread, "target": first_of_alice,
                                 "body": "after delete"})
        assert again["code"] == "not_found", again
        # a receipt on an archived event; an older one is a duplicate, appending nothing
        read = await b.request({"type": "read", "thread": thread, "up_to": ids[3]})
        assert read["type"] == "ack" and not read["duplicate"], read
        older = await b.request({"type": "read", "thread": thread, "up_to": ids[1]})
        assert older["type"] == "ack" and older["duplicate"] and older["id"] == read["id"], older
        missing = await b.request({"type": "read", "thread": thread, "up_to": "1-0"})
        assert missing["code"] == "not_found", missing
        # the last live frame is in (on a cluster it may come after the ack: one more hop)
        await a.next("event", thread=thread, id=read["id"])

        fleet.burst(DUOLOGUE_RETAIN_EVENTS=RETAIN)
        assert len(stream_ids(rclient, pkeys, thread)) == 5
        assert_projection(db, {thread: merged_history(db, rclient, pkeys, thread)})
        assert dead_letters(db) == []
        events, synced = await sync_all(a, thread)
        assert [e["id"] for e in events] == [i for i, _ in merged_history(db, rclient, pkeys,
                                                                          thread)]
    finally:
        await a.close()
        await b.close()


async def test_an_idle_thread_leaves_redis_and_comes_back_above_its_archived_ids(
        tiers, fleet, rclient, db, pkeys):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a, b = await Client.connect(tiers.ws_url, alice), await Client.connect(tiers.ws_url, bob)
    try:
        ids = await converse(a, b, 4)
        read = await b.request({"type": "read", "thread": thread, "up_to": ids[-1]})
        ids.append(read["id"])
        await asyncio.sleep(1.2)
        fleet.burst(DUOLOGUE_RETAIN_IDLE="1")
        part = pkeys.partition(thread)
        assert not rclient.exists(pkeys.stream(thread))
        assert not rclient.exists(pkeys.state(thread))
        assert rclient.hget(pkeys.index(part, alice), thread).decode() == ids[-1]

        hello = await Client.connect(tiers.ws_url, alice)  # hello still lists it
        try:
            assert {"thread": thread, "with": bob, "last_id": ids[-1]} in hello.hello["threads"]
        finally:
            await hello.close()
        events, synced = await sync_all(a, thread)
        assert [e["id"] for e in events] == ids
        assert synced["recovered"] is True and synced["last_id"] == ids[-1]
        newer, synced = await sync_all(a, thread, ids[-1])
        assert newer == [] and synced["recovered"] is True
        ahead, synced = await sync_all(a, thread, f"{event_key(ids[-1])[0] + 10**6}-0")
        assert ahead == [] and synced["recovered"] is False

        # the receipt comes from the archive: an older one appends nothing
        older = await b.request({"type": "read", "thread": thread, "up_to": ids[0]})
        assert older["duplicate"] and older["id"] == read["id"], older
        # a new event continues above every archived id, in a new stream
        again = await a.say(bob, "back again")
        assert event_key(again["id"]) > event_key(ids[-1])
        assert stream_ids(rclient, pkeys, thread) == [again["id"]]
        await b.next("event", id=again["id"])  # live, before the replay below
        events, _ = await sync_all(b, thread)
        assert [e["id"] for e in events] == [*ids, again["id"]]
        fleet.burst()
        assert_projection(db, {thread: merged_history(db, rclient, pkeys, thread)})
    finally:
        await a.close()
        await b.close()


async def test_a_re_created_stream_never_goes_below_an_archived_id_even_if_the_clock_does(
        tiers, fleet, rclient, db, pkeys):
    """The index remembers the thread's newest id; a new stream starts above it even when
    that id is ahead of the Redis clock (a failover to a host whose clock lags)."""
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    part = pkeys.partition(thread)
    future = f"{int(time.time() * 1000) + 3_600_000}-7"
    for user in (alice, bob):  # as if the thread's last event had been an hour ahead
        rclient.hset(pkeys.index(part, user), thread, future)
    a = await Client.connect(tiers.ws_url, alice)
    try:
        ack = await a.say(bob, "hello")
        assert ack["id"] == future.replace("-7", "-8"), ack
        assert rclient.hget(pkeys.state(thread), ARCHIVED_BELOW).decode() == ack["id"]
    finally:
        await a.close()


async def test_idle_threads_cost_little_redis_memory(tiers, fleet, rclient, db, pkeys):
    """200 threads with one message each, idle and swept: what is left of each is its two
    index entries, well under the 400 bytes section 7 allows (the benchmark measures the
    same over 10,000 threads with INFO memory)."""
    users = [uid("m") for _ in range(21)]
    alice = await Client.connect(tiers.ws_url, users[0])
    try:
        for other in users[1:]:
            ack = await alice.say(other, "one message")
            assert ack["type"] == "ack", ack
    finally:
        await alice.close()
    await asyncio.sleep(1.1)
    fleet.burst(DUOLOGUE_RETAIN_IDLE="1")
    left = [k for k in rclient.scan_iter(match=f"{pkeys.prefix}:*", count=1000)
            if b":t:" in k or b":s:" in k]
    assert left == []
    index = [k for k in rclient.scan_iter(match=f"{pkeys.prefix}:*:u:*", count=1000)]
    used = sum(rclient.memory_usage(k, samples=0) or 0 for k in index)
    assert used / 20 < 400, used / 20


async def test_a_running_projector_trims_and_sweeps_within_seconds(
        tiers, fleet, rclient, db, pkeys):
    """No burst: a long-running projector makes its passes on its own (every second here,
    every 10 s by default) and never removes what it has not archived."""
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    part = pkeys.partition(thread)
    fleet.start(DUOLOGUE_RETAIN_EVENTS=RETAIN, DUOLOGUE_RETAIN_IDLE="3",
                DUOLOGUE_RETENTION_EVERY="1")
    a = await Client.connect(tiers.ws_url, alice)
    try:
        ids = [(await a.say(bob, f"m{n}"))["id"] for n in range(30)]
        deadline = time.monotonic() + 15
        while stream_ids(rclient, pkeys, thread) != ids[-5:]:
            assert time.monotonic() < deadline, stream_ids(rclient, pkeys, thread)
            await asyncio.sleep(0.1)
        archived = {i for i, in db.execute("SELECT id FROM events WHERE thread = %s", (thread,))}
        assert set(ids) <= archived
        while rclient.exists(pkeys.stream(thread)):  # idle for 3 s, then swept
            assert time.monotonic() < deadline + 10, "the idle thread stayed in Redis"
            await asyncio.sleep(0.2)
        assert rclient.hget(pkeys.index(part, bob), thread).decode() == ids[-1]
        events, synced = await sync_all(a, thread)
        assert [e["id"] for e in events] == ids and synced["recovered"] is True
    finally:
        await a.close()


async def test_verify_tells_redis_loss_from_damage_and_replay_restores_gapless_sync(
        tiers, fleet, rclient, db, pkeys):
    """The stream's tail deleted by hand (as Redis losing it would): verify names it as
    Redis having lost what the archive holds, with the repair; the projection is not called
    damaged. replay keeps every archived event and makes sync gapless again."""
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a, b = await Client.connect(tiers.ws_url, alice), await Client.connect(tiers.ws_url, bob)
    try:
        ids = await converse(a, b, 5)
        for event_id in ids:  # every live frame is in: none may land in the replay below
            await a.next("event", id=event_id)
        fleet.burst()
        tail = ids[-3:]
        assert rclient.xdel(pkeys.stream(thread), *tail) == 3
        env = fleet.env
        found = duologue(env, "verify")
        assert found.returncode == 1, found.stdout + found.stderr
        assert f"Redis lost 3 events the archive holds: {', '.join(tail)}" in found.stdout
        assert f"repair: duologue replay --thread {thread} serves them" in found.stdout
        assert "messages missing" not in found.stdout and ", the log " not in found.stdout
        events, _ = await sync_all(a, thread)
        assert [e["id"] for e in events] == ids[:-3]  # the hole verify reports
        done = duologue(env, "replay", "--thread", thread)
        assert done.returncode == 0, done.stdout + done.stderr
        archived = [i for i, in db.execute(
            "SELECT id FROM events WHERE thread = %s ORDER BY key", (thread,))]
        assert archived == ids
        assert_projection(db, {thread: merged_history(db, rclient, pkeys, thread)})
        assert duologue(env, "verify").returncode == 0
        events, synced = await sync_all(a, thread)
        assert [e["id"] for e in events] == ids and synced["last_id"] == ids[-1]
        later = await a.say(bob, "after the repair")
        assert event_key(later["id"]) > event_key(ids[-1])
        await b.next("event", id=later["id"])
        events, _ = await sync_all(b, thread, ids[-4])
        assert [e["id"] for e in events] == [*ids[-3:], later["id"]]
    finally:
        await a.close()
        await b.close()
