"""The projector applies the event log to Postgres exactly once in effect (guarantee 5).

Every test writes real events through a real gateway (or, for poison, straight into a
partition log), runs the real ``duologue projector`` process against a database of its
own, and compares the projection row by row with the domain fold of the thread streams.
"""

from __future__ import annotations

import json
import time

import psycopg
import pytest
import redis

from adapters.record import B_LOG_ID, B_LOG_THREAD, Keys
from adapters.redis_connect import scripted
from projector.attempts import TOLERATED
from projector.entries import Entry, parse
from projector.project import project
from projector.tables import LIVE, PROJECTION_LOCK
from tests.projection_support import (
    PARTITIONS,
    actual_projection,
    assert_done,
    assert_projection,
    checkpoint_events,
    dead_letters,
    drain_problems,
    expected_projection,
    log_entries,
    log_lines,
    projection_diff,
    thread_streams,
)
from tests.support import uid
from tests.workload_support import Workload

# --- 8. burst mode ------------------------------------------------------------------------


async def test_burst_exits_once_drained_one_worker_then_two(gateway, fleet, rclient, db, pkeys):
    async with Workload(gateway.ws_url, seed=8) as work:
        assert await work.run(800) == 800
        # every kind of command is in the mix the projector tests project
        assert set(work.kinds) == {"send", "edit", "delete", "read", "react", "unreact",
                                   "block", "unblock"}, work.kinds
        started = time.monotonic()
        fleet.burst()
        one = time.monotonic() - started
        assert_done(rclient, db, pkeys)
        assert checkpoint_events(db) == 800

        assert await work.run(800) == 800
        started = time.monotonic()
        fleet.burst("--workers", "2")
        two = time.monotonic() - started
    assert_done(rclient, db, pkeys)
    assert checkpoint_events(db) == 1600
    assert sum(r[0] for r in db.execute("SELECT events FROM threads")) == 1600
    assert one < 30 and two < 30, (one, two)


def test_burst_with_nothing_to_do_exits_at_once(fleet, rclient, db, pkeys):
    started = time.monotonic()
    fleet.burst(timeout=30)
    assert time.monotonic() - started < 15
    assert drain_problems(rclient, db, pkeys) == []
    assert db.execute("SELECT count(*) FROM events").fetchone() == (0,)


# --- 2. the same entries delivered twice ------------------------------------------------


def restore_logs(client: redis.Redis, saved: dict[str, list[tuple[str, dict]]]) -> None:
    """Put every partition log back as it was (same entry ids)."""
    with client.pipeline(transaction=False) as pipe:
        for stream, items in saved.items():
            pipe.delete(stream)
            for log_id, fields in items:
                pipe.xadd(stream, fields, id=log_id)
        pipe.execute()


async def test_entries_delivered_again_change_nothing(gateway, fleet, rclient, db, pkeys):
    async with Workload(gateway.ws_url, seed=2) as work:
        assert await work.run(600) == 600
    saved = log_entries(rclient, pkeys)
    assert sum(len(v) for v in saved.values()) == 600
    fleet.burst()
    assert_done(rclient, db, pkeys)
    first = actual_projection(db)
    assert checkpoint_events(db) == 600

    # Still in the log below the checkpoint (as after a crash before the trim).
    restore_logs(rclient, saved)
    fleet.burst()
    assert projection_diff(actual_projection(db), first) == []
    assert checkpoint_events(db) == 600  # every entry was at or below the checkpoint
    assert drain_problems(rclient, db, pkeys) == []

    # Redelivered above a lost checkpoint: only the projection's own heads stop them.
    restore_logs(rclient, saved)
    db.execute("UPDATE projector_checkpoints SET log_id = '0', log_key = 0")
    fleet.burst()
    assert checkpoint_events(db) == 1200  # all 600 went through project() a second time
    assert projection_diff(actual_projection(db), first) == []
    assert_done(rclient, db, pkeys)


def _entries(saved: dict[str, list[tuple[str, dict]]]) -> list[Entry]:
    entries = []
    for items in saved.values():
        for log_id, fields in items:
            entry = parse(log_id, fields)
            assert isinstance(entry, Entry), entry
            entries.append(entry)
    return entries


def _project(conn: psycopg.Connection, entries: list[Entry]) -> int:
    with conn.transaction(), conn.cursor() as cur:
        return project(cur, LIVE, entries)


def _truncate(conn: psycopg.Connection) -> None:
    conn.execute("TRUNCATE events, messages, threads, read_receipts")


async def test_project_twice_on_the_same_entries_has_no_second_effect(
        gateway, rclient, db, pkeys):
    async with Workload(gateway.ws_url, seed=22) as work:
        assert await work.run(500) == 500
    entries = _entries(log_entries(rclient, pkeys))
    want = expected_projection(thread_streams(rclient, pkeys))
    assert len(entries) == 500

    assert _project(db, entries) == 500
    assert projection_diff(want, actual_projection(db)) == []
    assert _project(db, entries) == 0  # a second transaction on the same entries
    with db.transaction(), db.cursor() as cur:  # twice within one transaction
        assert project(cur, LIVE, entries[:250]) == 0
        assert project(cur, LIVE, entries) == 0
    assert projection_diff(want, actual_projection(db)) == []

    # Overlapping batches: every entry but the first 100 arrives twice.
    _truncate(db)
    applied = sum(_project(db, entries[start:start + 200]) for start in range(0, 500, 100))
    assert applied == 500
    assert projection_diff(want, actual_projection(db)) == []

    # The same entry twice inside one batch.
    _truncate(db)
    assert _project(db, [e for entry in entries for e in (entry, entry)]) == 500
    assert projection_diff(want, actual_projection(db)) == []


# --- 4. poison entries ----------------------------------------------------------------------


def _some_thread(work: Workload, partition: int | None, keys: Keys) -> tuple[str, str, str]:
    for model in work.models:
        a, b = model.users
        if a != b and (partition is None or keys.partition(model.thread) == partition):
            return model.thread, a, b
    raise AssertionError("no thread in that partition")


async def test_poison_entries_go_to_dead_letters_and_the_partition_moves_on(
        gateway, fleet, rclient, db, pkeys):
    future = f"{int(time.time() * 1000) + 10**7}-0"  # would hide every later event if applied
    poison: dict[tuple[str, str], str] = {}  # (stream, log id) -> what the reason must say

    def inject(thread: str, fields: dict[str, str], reason: str) -> None:
        stream = pkeys.log(pkeys.partition(thread))
        log_id = rclient.xadd(stream, fields).decode()
        poison[(stream, log_id)] = reason

    async with Workload(gateway.ws_url, seed=4) as work:
        t1, _, _ = _some_thread(work, None, pkeys)
        t2, a2, _ = _some_thread(work, pkeys.partition(t1), pkeys)  # t1 itself, maybe
        t3, a3, _ = work.models[-1].thread, *work.models[-1].users
        await work.run(150)
        inject(t1, {"t": t1, "i": future, "e": "{not json"}, "DecodeError")
        inject(t2, {"t": t2, "e": json.dumps({"kind": "MessageSent", "sender": a2,
                                              "body": "no i", "client_msg_id": "p1"})},
               "lacks one of t, i, e")
        await work.run(150)
        intruder = uid("mallory")
        inject(t2, {"t": t2, "i": future, "e": json.dumps(
            {"kind": "MessageSent", "sender": intruder, "body": "let me in",
             "client_msg_id": "p2"})}, "participant")
        inject(t3, {"t": t3, "i": future, "e": json.dumps(
            {"kind": "MessageSent", "sender": a3, "body": "nul \u0000 inside",
             "client_msg_id": "p3"})}, "NUL")
        inject(t3, {"t": t3, "i": future, "e": json.dumps(
            {"kind": "MessageSent", "sender": a3, "body": "fine",
             "client_msg_id": "p\u00004"})}, "NUL")
        # Valid to the parser, refused by Postgres (its timestamp is past year 294276):
        # the batch is split until this entry stands alone and is buried with
        # Postgres's reason, keeping its thread, id and payload.
        inject(t3, {"t": t3, "i": "18446744073709551615-0", "e": json.dumps(
            {"kind": "MessageSent", "sender": a3, "body": "far future",
             "client_msg_id": "p5"})}, "out of range")
        await work.run(150)

    fleet.burst()
    letters = dead_letters(db)
    assert len(letters) == 6, letters
    assert {(stream, log_id) for stream, log_id, *_ in letters} == set(poison)
    for stream, log_id, _, _, _, reason in letters:
        want = poison[(stream, log_id)]
        if want == "NUL":  # the parser may refuse it, else Postgres does
            assert "NUL" in reason or "\\u0000" in reason, reason
        else:
            assert want in reason, (want, reason)
    # Everything else is projected, and each partition's checkpoint passed its poison.
    assert_projection(db, thread_streams(rclient, pkeys))
    assert drain_problems(rclient, db, pkeys) == []
    refused = [row for row in letters if "out of range" in row[-1]]
    assert [(r[2], r[3]) for r in refused] == [(t3, "18446744073709551615-0")], refused
    assert "far future" in refused[0][4]
    assert checkpoint_events(db) == 450 + 6


def _next_attempt(client: redis.Redis, key: str, before: dict, timeout: float = 20) -> dict:
    """The partition's crash-loop record once a new process has written to it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
        if now != before:
            return now
        time.sleep(0.02)
    raise AssertionError(f"no projector process recorded an attempt at {key}")


async def test_a_crash_loop_steps_through_the_batch_then_buries_the_entry_it_dies_on(
        gateway, fleet, rclient, db, pkeys, fresh_database):
    """Real processes die, again and again, after starting their first batch and before
    committing it (the projection lock is held, then the process is SIGKILLed). After 10
    deaths at one position a partition is stepped through one entry at a time; after 10
    more on that first entry alone, it is buried with the reason; the rest is projected.
    Every partition sees the same deaths here, so each buries its first entry."""
    async with Workload(gateway.ws_url, seed=9) as work:
        assert await work.run(200) == 200
    partition = max(range(PARTITIONS), key=lambda p: rclient.xlen(pkeys.log(p)))
    stream, key = pkeys.log(partition), pkeys.attempts(partition)
    [(last_id, _)] = rclient.xrevrange(stream, count=1)  # one batch holds them all
    firsts = {pkeys.log(p): rclient.xrange(pkeys.log(p), count=1) for p in range(PARTITIONS)}
    record: dict = {}
    with psycopg.connect(fresh_database, autocommit=True) as blocker:
        blocker.execute("SELECT pg_advisory_lock(%s)", (PROJECTION_LOCK,))
        for death in range(1, 2 * TOLERATED + 1):
            process = fleet.start()
            record = _next_attempt(rclient, key, record)
            process.kill()
            assert record["at"] == "0", record
            if death <= TOLERATED:
                assert (record["n"], record.get("narrow")) == (str(death), None), record
            else:  # stepping singly through the batch the first ten died on
                assert record["n"] == str(death - TOLERATED), record
                assert record["narrow"] == last_id.decode(), record
        blocker.execute("SELECT pg_advisory_unlock(%s)", (PROJECTION_LOCK,))
    fleet.burst()
    reason = f"the projector died {TOLERATED} times applying this entry"
    letters = dead_letters(db)
    assert sorted((s, i, r) for s, i, _, _, _, r in letters) == sorted(
        (s, first[0][0].decode(), reason) for s, first in firsts.items() if first)
    streams = thread_streams(rclient, pkeys)
    for first in firsts.values():
        if first:
            fields = first[0][1]
            thread, event_id = fields[B_LOG_THREAD].decode(), fields[B_LOG_ID].decode()
            streams[thread] = [(i, p) for i, p in streams[thread] if i != event_id]
    assert_projection(db, streams)
    assert drain_problems(rclient, db, pkeys) == []


async def test_a_crash_loop_that_stops_leaves_nothing_buried(
        gateway, fleet, rclient, db, pkeys, fresh_database):
    """Ten processes died on the batch; the eleventh steps through it singly, dies on none
    of its entries, and goes on in batches: nothing is buried, everything projected."""
    async with Workload(gateway.ws_url, seed=10) as work:
        assert await work.run(200) == 200
    partition = max(range(PARTITIONS), key=lambda p: rclient.xlen(pkeys.log(p)))
    key = pkeys.attempts(partition)
    record: dict = {}
    with psycopg.connect(fresh_database, autocommit=True) as blocker:
        blocker.execute("SELECT pg_advisory_lock(%s)", (PROJECTION_LOCK,))
        for _ in range(TOLERATED):
            process = fleet.start()
            record = _next_attempt(rclient, key, record)
            process.kill()
        blocker.execute("SELECT pg_advisory_unlock(%s)", (PROJECTION_LOCK,))
    burst = fleet.burst()
    modes = {line["mode"] for line in log_lines(burst, "projector_crash_loop")}
    assert modes == {"single"}, modes
    assert_done(rclient, db, pkeys)


@pytest.mark.timeout(420)  # ~15 s here; the burst's own limit below shows its log if hit
def test_batches_spanning_a_thousand_threads_each(fleet, rclient, db, pkeys):
    """120,000 sends over 20,000 threads: every batch touches ~1,000 threads. In psycopg
    pipeline mode a cursor with two statements in flight once handed the projector the
    first one's rows for the second, and the worker died after ~65,000 events."""
    script = scripted(  # loaded on every primary of a cluster: a pipeline cannot load it
        rclient, "local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[1]) "
        "redis.call('XADD', KEYS[2], '*', 't', ARGV[2], 'i', id, 'e', ARGV[1])")
    users = [(uid("a"), uid("b")) for _ in range(20_000)]
    with rclient.pipeline(transaction=False) as pipe:
        for n in range(120_000):
            a, b = users[n % len(users)]
            thread = f"dm:{min(a, b)}:{max(a, b)}"
            payload = json.dumps({"kind": "MessageSent", "sender": a, "body": f"m{n}",
                                  "client_msg_id": f"c{n}"})
            script(keys=[pkeys.stream(thread), pkeys.log(pkeys.partition(thread))],
                   args=[payload, thread], client=pipe)
            if n % 10_000 == 9_999:
                pipe.execute()
    process = fleet.burst(timeout=300)
    assert process.process.returncode == 0, process.log()[-2000:]
    assert checkpoint_events(db) == 120_000
    row = db.execute("SELECT count(*), count(DISTINCT thread) FROM messages").fetchone()
    assert row == (120_000, 20_000)
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)


async def test_an_entry_at_or_below_its_threads_head_is_never_skipped_without_a_trace(
        gateway, fleet, rclient, db, pkeys):
    """After Redis lost writes, a log entry can carry an event id the thread already had.
    The projector applies nothing of it, but unless the archive holds that very event (a
    second delivery, harmless), it goes to the dead letters with the reason."""
    async with Workload(gateway.ws_url, seed=12) as work:
        assert await work.run(120) == 120
    fleet.burst()
    assert_done(rclient, db, pkeys)
    thread, event_id, payload = db.execute(
        "SELECT thread, id, payload::text FROM events WHERE kind = 'MessageSent' "
        "ORDER BY key LIMIT 1").fetchone()
    sender = json.loads(payload)["sender"]
    stream = pkeys.log(pkeys.partition(thread))
    other = json.dumps({"kind": "MessageSent", "sender": sender, "body": "a second event",
                        "client_msg_id": "reused-id"})
    again = rclient.xadd(stream, {"t": thread, "i": event_id, "e": payload}).decode()
    reused = rclient.xadd(stream, {"t": thread, "i": event_id, "e": other}).decode()
    fleet.burst()
    letters = dead_letters(db)
    assert [(s, i) for s, i, *_ in letters] == [(stream, reused)], letters
    assert "Redis handed out an id twice" in letters[0][-1], letters
    assert letters[0][2:5] == (thread, event_id, other)
    assert again not in {i for _, i, *_ in letters}  # the second delivery: no trace needed
    assert_projection(db, thread_streams(rclient, pkeys))
