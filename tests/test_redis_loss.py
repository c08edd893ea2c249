"""The archive outlives Redis (protocol.md sections 7 and 9): Redis restarted from an
append-only file that misses its last events, and Postgres away while a replay needs it.

Real processes throughout: a private redis-server with AOF everysec, a gateway and a
long-running projector; the "lost second" is made by restoring a copy of the AOF taken
before the last events were appended (and archived).
"""

from __future__ import annotations

import asyncio

import psycopg
import redis

from adapters.record import Keys
from domain.ids import event_key
from tests.faults_support import TcpProxy, copy_aof, restore_aof
from tests.ops_support import duologue
from tests.projection_support import (
    PARTITIONS,
    Fleet,
    assert_projection,
    dead_letters,
    log_lines,
    projector_env,
    tail,
    wait_drained,
)
from tests.record_support import merged_history, sync_all
from tests.support import Client, thread_of, uid


async def test_postgres_away_when_a_replay_needs_the_archive_is_unavailable_then_heals(
        start_gateway, fleet, fresh_database, rclient, pkeys):
    info = psycopg.conninfo.conninfo_to_dict(fresh_database)
    proxy = await TcpProxy(int(info.get("port") or 5432)).start()
    url = psycopg.conninfo.make_conninfo(fresh_database, host="127.0.0.1", port=proxy.port)
    gateway = await asyncio.to_thread(start_gateway, DUOLOGUE_PARTITIONS=str(PARTITIONS),
                                      DATABASE_URL=url)
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a = await Client.connect(gateway.ws_url, alice)
    try:
        ids = [(await a.say(bob, f"m{n}"))["id"] for n in range(20)]
        await asyncio.to_thread(fleet.burst, DUOLOGUE_RETAIN_EVENTS="5")
        assert len(rclient.xrange(pkeys.stream(thread))) == 5
        proxy.cut()
        for _ in range(3):  # a sync that needs the archive, and a command on an archived event
            a.frames.clear()
            await a.send({"type": "sync", "thread": thread, "after": "0"})
            refused = await a.next("error", timeout=15)
            assert refused["code"] == "unavailable", refused
            assert a.events(thread) == [], "a replay with a hole"
            edit = await a.request({"type": "edit", "thread": thread, "target": ids[0],
                                    "body": "x"})
            assert edit["code"] == "unavailable", edit
        fresh = await a.say(bob, "Redis alone still takes sends")  # the socket stays usable
        assert fresh["type"] == "ack", fresh
        proxy.resume()
        # the failed sync's replay goes on in the background (the thread stays held until
        # it is done): the whole thread, then the held live event
        await a.wait_for(lambda f: f.get("type") == "event" and f["id"] == fresh["id"], 30)
        for _ in range(50):
            a.frames.clear()
            await a.send({"type": "sync", "thread": thread, "after": "0"})
            answer = await a.wait_for(lambda f: f.get("type") in ("synced", "error"), 15)
            if answer["type"] == "synced":
                break
            await asyncio.sleep(0.2)  # the pool replaces its dropped connections
        assert answer == {"type": "synced", "thread": thread, "last_id": fresh["id"],
                          "recovered": True}
        assert [e["id"] for e in a.events(thread)] == [*ids, fresh["id"]]
    finally:
        await a.close()
        await asyncio.to_thread(gateway.terminate)
        await proxy.close()


async def test_redis_restarted_without_its_last_events_loses_nothing_acked(
        private_redis, start_gateway, fresh_database, prefix, log_dir, tmp_path):
    """Events archived after the AOF copy are lost by Redis. Afterwards: appends wait until
    the projector has checked the partitions (``unavailable``), a resent command the
    archive holds gets its first ack, new events get ids above every archived one and are
    projected (no dead letter), ``sync`` replays the lost events from the archive, and
    ``verify`` is clean."""
    keys = Keys(prefix, PARTITIONS)
    fleet = Fleet(projector_env(private_redis.url, fresh_database, prefix), log_dir)
    client = redis.Redis.from_url(private_redis.url)
    db = psycopg.connect(fresh_database, autocommit=True)
    gateway = start_gateway(REDIS_URL=private_redis.url, DATABASE_URL=fresh_database,
                            DUOLOGUE_PARTITIONS=str(PARTITIONS))
    alice, bob, carol = uid("a"), uid("b"), uid("c")
    snapshot = tmp_path / "aof-before"
    snapshot.mkdir()
    clients: list[Client] = []
    try:
        projector = fleet.start()
        a = await Client.connect(gateway.ws_url, alice)
        clients.append(a)
        kept = [await a.say(peer, f"kept {n}") for n in range(6) for peer in (bob, carol)]
        wait_drained(client, db, keys, 20, tail(projector))
        await asyncio.sleep(1.2)  # everysec: the AOF has it all
        copy_aof(private_redis.directory, snapshot)
        lost = [await a.say(peer, f"lost {n}", client_msg_id=f"lost-{peer}-{n}")
                for n in range(6) for peer in (bob, carol)]
        read = await a.request({"type": "read", "thread": thread_of(alice, bob),
                                "up_to": lost[-2]["id"]})
        wait_drained(client, db, keys, 20, tail(projector))
        # (thread, id): two threads' streams may hold the same id
        archived = set(db.execute("SELECT thread, id FROM events").fetchall())
        assert {(x["thread"], x["id"]) for x in kept + lost + [read]} <= archived

        private_redis.kill()  # as a crash would: the AOF holds what it held a moment ago
        restore_aof(snapshot, private_redis.directory)
        private_redis.start()

        # a resend of a command the archive holds: its first ack, once Redis is checked
        again = None
        for _ in range(100):
            again = await a.say(bob, "lost 0", client_msg_id=f"lost-{bob}-0")
            if again["type"] == "ack":
                break
            assert again["code"] == "unavailable", again
            await asyncio.sleep(0.1)
        assert again is not None and again["type"] == "ack", again
        assert (again["id"], again["duplicate"]) == (lost[0]["id"], True)
        assert log_lines(projector, "redis_lost_acked_events"), tail(projector)

        newest = max((x["id"] for x in [*lost, read]), key=event_key)
        after = [await a.say(peer, f"after {n}") for n in range(4) for peer in (bob, carol)]
        assert all(event_key(x["id"]) > event_key(newest) for x in after)
        older = await a.request({"type": "read", "thread": thread_of(alice, bob),
                                 "up_to": lost[0]["id"]})  # behind the archived receipt
        assert older["duplicate"] and older["id"] == read["id"], older
        wait_drained(client, db, keys, 20, tail(projector))
        assert dead_letters(db) == []

        b = await Client.connect(gateway.ws_url, bob)
        clients.append(b)
        threads = (thread_of(alice, bob), thread_of(alice, carol))
        histories = {t: merged_history(db, client, keys, t) for t in threads}
        assert_projection(db, histories)
        for thread, history in histories.items():
            events, synced = await sync_all(a, thread)
            assert [e["id"] for e in events] == [i for i, _ in history]
            assert synced["recovered"] is True
        acked = {(x["thread"], x["id"]) for x in [*kept, *lost, *after, read]}
        assert acked <= set(db.execute("SELECT thread, id FROM events").fetchall())
        done = duologue(fleet.env, "verify")
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        for c in clients:
            await c.close()
        fleet.stop_all()
        db.close()
        client.close()
