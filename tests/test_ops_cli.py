"""The operators' commands run as an operator runs them: ``duologue status|verify|replay``
as subprocesses against the real Redis and a Postgres database of the test's own.

The yardstick everywhere is the domain fold of each thread stream (XRANGE): the
projection must equal it row for row, and the archive must hold the stream exactly.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import redis.asyncio as aioredis

from adapters.record import Keys
from domain.commands import DeleteMessage, EditMessage, MarkRead
from domain.ids import sort_key, thread_id
from domain.state import Message, ThreadState, fold
from gateway.store import EventStore, guard_for
from schemas.events import (
    MessageDeleted,
    MessageEdited,
    MessageSent,
    ReadUpTo,
    decode_event,
    encode_event,
)
from tests.support import ROOT, Client, ProjectorProcess, uid

PARTITIONS = 8


# --- running the command line ---------------------------------------------------------

def duologue(env: dict[str, str], *args: str, timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
    """``python -m duologue.cli ARGS`` with exactly the operator's environment."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("REDIS_URL", "DATABASE_URL", "DUOLOGUE_PREFIX", "DUOLOGUE_PARTITIONS")}
    return subprocess.run([sys.executable, "-m", "duologue.cli", *args], cwd=ROOT,
                          env={**base, "COLUMNS": "200", **env}, capture_output=True,
                          text=True, timeout=timeout)


def duologue_all(env: dict[str, str], *commands: tuple[str, ...], timeout: float = 60
                 ) -> list[subprocess.CompletedProcess[str]]:
    """Several independent commands at once (each as ``duologue`` would run it)."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("REDIS_URL", "DATABASE_URL", "DUOLOGUE_PREFIX", "DUOLOGUE_PARTITIONS")}
    running = [(args, subprocess.Popen(
        [sys.executable, "-m", "duologue.cli", *args], cwd=ROOT,
        env={**base, "COLUMNS": "200", **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)) for args in commands]
    done = []
    for args, process in running:
        out, err = process.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(args, process.returncode, out, err))
    return done


def differing(done: subprocess.CompletedProcess[str]) -> set[str]:
    """The threads ``duologue verify`` names as differing."""
    return {line.removeprefix("DIFFERS ").strip() for line in done.stdout.splitlines()
            if line.startswith("DIFFERS ")}


@pytest.fixture
def ops_env(redis_url: str, fresh_database: str, prefix: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "DATABASE_URL": fresh_database, "DUOLOGUE_PREFIX": prefix,
            "DUOLOGUE_PARTITIONS": str(PARTITIONS)}


@pytest.fixture
def ops_keys(prefix: str) -> Keys:
    return Keys(prefix, PARTITIONS)


def project_burst(env: dict[str, str], log_dir: Path) -> None:
    """``duologue projector --burst``: project everything in the logs, then exit."""
    projector = ProjectorProcess(env, ("--burst",)).start(log_dir)
    assert projector.wait(60) == 0, projector.log()


# --- producing events through the real append script ----------------------------------

class Seeder:
    """Appends events with the gateway's EventStore (the real Lua append script)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def send(self, thread: str, sender: str, body: str) -> str:
        appended = await self.store.append(
            thread, sender, uid("c"), MessageSent(sender=sender, body=body, client_msg_id="x"))
        return appended.id

    async def edit(self, thread: str, sender: str, target: str, body: str) -> str:
        cmid = uid("c")
        guard = guard_for(EditMessage(sender, thread, target, body, cmid))
        appended = await self.store.append(thread, sender, cmid, MessageEdited(
            sender=sender, target=target, body=body, client_msg_id=cmid), guard)
        return appended.id

    async def delete(self, thread: str, sender: str, target: str) -> str:
        cmid = uid("c")
        guard = guard_for(DeleteMessage(sender, thread, target, cmid))
        appended = await self.store.append(thread, sender, cmid, MessageDeleted(
            sender=sender, target=target, client_msg_id=cmid), guard)
        return appended.id

    async def read(self, thread: str, reader: str, up_to: str) -> str:
        cmid = uid("c")
        guard = guard_for(MarkRead(reader, thread, up_to, cmid))
        appended = await self.store.append(thread, reader, cmid,
                                           ReadUpTo(reader=reader, up_to=up_to), guard)
        return appended.id

    async def conversation(self, a: str, b: str, sends: int) -> list[str]:
        """``sends`` messages alternating a/b, with edits, deletes and receipts between."""
        thread = thread_id(a, b)
        sent: list[tuple[str, str]] = []
        for i in range(sends):
            sender, other = (a, b) if i % 2 == 0 else (b, a)
            sent.append((await self.send(thread, sender, f"{sender} {i}"), sender))
            if i % 5 == 4:
                await self.edit(thread, *_own(sent, sender, back=2), f"edited {i}")
            if i % 7 == 6:
                await self.delete(thread, *_own(sent, sender, back=4))
            if i % 3 == 2:
                await self.read(thread, other, sent[-1][0])
        return [i for i, _ in sent]


def _own(sent: list[tuple[str, str]], sender: str, back: int) -> tuple[str, str]:
    """(sender, id) of the sender's message ``back`` positions from the end."""
    return sender, sent[-1 - back][0] if sent[-1 - back][1] == sender else sent[-1][0]


async def seed(redis_url: str, keys: Keys, pairs: list[tuple[str, str]], sends: int
               ) -> dict[str, list[str]]:
    """Several conversations at once; returns each thread's message ids."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        seeder = Seeder(EventStore(client, keys, 86400))
        found = await asyncio.gather(*(seeder.conversation(a, b, sends) for a, b in pairs))
    finally:
        await client.aclose()
    return {thread_id(a, b): ids for (a, b), ids in zip(pairs, found, strict=True)}


def pairs_of(count: int) -> list[tuple[str, str]]:
    return [(uid("a"), uid("b")) for _ in range(count)]


# --- the yardstick: the fold of each thread stream ------------------------------------

def stream_of(client: redis.Redis, keys: Keys, thread: str) -> list[tuple[str, bytes]]:
    entries: Any = client.xrange(keys.stream(thread), "-", "+")
    return [(i.decode(), f[b"e"]) for i, f in entries]


def fold_of(client: redis.Redis, keys: Keys, thread: str) -> ThreadState:
    return fold(thread, ((i, decode_event(p)) for i, p in stream_of(client, keys, thread)))


def rows_of(conn: psycopg.Connection, thread: str) -> dict[str, Any]:
    """What Postgres holds for one thread, in the fold's terms."""
    messages = {mid: Message(s, b, sa, ea, da) for mid, s, b, sa, ea, da in conn.execute(
        "SELECT id, sender, body, duologue_ms(sent_at), duologue_ms(edited_at), "
        "duologue_ms(deleted_at) FROM messages WHERE thread = %s", (thread,))}
    receipts = {r: (u, e) for r, u, e in conn.execute(
        "SELECT reader, up_to, event_id FROM read_receipts WHERE thread = %s", (thread,))}
    head = conn.execute("SELECT last_id, events FROM threads WHERE thread = %s",
                        (thread,)).fetchone()
    archive = [(i, p) for i, p in conn.execute(
        "SELECT id, payload::text FROM events WHERE thread = %s ORDER BY key", (thread,))]
    return {"messages": messages, "receipts": receipts, "head": head, "archive": archive}


def expected_of(client: redis.Redis, keys: Keys, thread: str) -> dict[str, Any]:
    """What Postgres should hold for one thread: the fold of its stream."""
    stream = stream_of(client, keys, thread)
    state = fold(thread, ((i, decode_event(p)) for i, p in stream))
    receipts = {}
    for reader, up_to in state.receipts.items():
        setter = next(i for i, p in reversed(stream)
                      if isinstance(e := decode_event(p), ReadUpTo)
                      and e.reader == reader and e.up_to == up_to)
        receipts[reader] = (up_to, setter)
    return {"messages": dict(state.messages), "receipts": receipts,
            "head": (state.last_id, len(stream)) if stream else None,
            "archive": [(i, p) for i, p in stream]}


def assert_projection_is_fold(conn: psycopg.Connection, client: redis.Redis, keys: Keys,
                              threads: list[str]) -> None:
    projected = {str(r[0]) for r in conn.execute("SELECT thread FROM threads")}
    assert projected == set(threads)
    for thread in threads:
        got, want = rows_of(conn, thread), expected_of(client, keys, thread)
        # the archive: same ids in order, payloads equal as events
        assert [i for i, _ in got["archive"]] == [i for i, _ in want["archive"]], thread
        assert [encode_event(decode_event(p)) for _, p in got["archive"]] == \
            [encode_event(decode_event(p)) for _, p in want["archive"]], thread
        for part in ("messages", "receipts", "head"):
            assert got[part] == want[part], (thread, part)
    row = conn.execute("SELECT count(*) FROM messages WHERE NOT thread = ANY(%s)",
                       (threads,)).fetchone()
    assert row == (0,)


def snapshot(conn: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the archive and the projection, every column."""
    return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("events", "messages", "threads", "read_receipts")}


def wait_projected(conn: psycopg.Connection, client: redis.Redis, keys: Keys,
                   threads: list[str], timeout: float = 30) -> None:
    """Until every thread's projected position is the last id of its stream."""
    deadline = time.monotonic() + timeout
    while True:
        last = {}
        for thread in threads:
            top: Any = client.xrevrange(keys.stream(thread), "+", "-", count=1)
            last[thread] = top[0][0].decode() if top else None
        heads = dict(conn.execute("SELECT thread, last_id FROM threads WHERE thread = ANY(%s)",
                                  (threads,)).fetchall())
        if all(heads.get(t) == last[t] for t in threads):
            return
        assert time.monotonic() < deadline, f"projection still behind: {heads} vs {last}"
        time.sleep(0.05)


# --- 1. verify names what differs, replay repairs it --------------------------------

async def _talk(first: Client, second: Client) -> list[str]:
    """Six messages over the WebSocket, an edit, a delete and two receipts."""
    ids = []
    for i in range(6):
        speaker, listener = (first, second) if i % 2 == 0 else (second, first)
        ack = await speaker.say(listener.user, f"{speaker.user} says {i}")
        assert ack["type"] == "ack", ack
        ids.append(ack["id"])
    thread = ack["thread"]
    for client, frame in (
        (first, {"type": "edit", "thread": thread, "target": ids[0], "body": "edited"}),
        (second, {"type": "delete", "thread": thread, "target": ids[1]}),
        (second, {"type": "read", "thread": thread, "up_to": ids[2]}),
        (first, {"type": "read", "thread": thread, "up_to": ids[5]}),
    ):
        answer = await client.request(frame)
        assert answer["type"] == "ack", answer
    return ids


async def test_verify_names_differing_threads_and_replay_repairs_them(
        start_gateway, ops_env, ops_keys, rclient, db, log_dir):
    gateway = start_gateway(DUOLOGUE_PARTITIONS=str(PARTITIONS))
    users = [uid(f"u{i}") for i in range(6)]
    clients = [await Client.connect(gateway.ws_url, u) for u in users]
    try:
        # X, Y, Z, W are corrupted below, V never is
        couples = {"X": (0, 1), "Y": (2, 3), "Z": (0, 2), "W": (1, 3), "V": (4, 5)}
        ids: dict[str, list[str]] = {}
        threads: dict[str, str] = {}
        for name, (i, j) in couples.items():
            ids[name] = await _talk(clients[i], clients[j])
            threads[name] = thread_id(users[i], users[j])
    finally:
        for client in clients:
            await client.close()
    X, Y, Z, W, V = (threads[n] for n in "XYZWV")
    everything = sorted(threads.values())

    project_burst(ops_env, log_dir)
    done = duologue(ops_env, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert differing(done) == set()
    assert "5 threads, 50 events checked; 0 differ; 0 events not yet projected" in done.stdout
    assert_projection_is_fold(db, rclient, ops_keys, everything)

    # hand-made damage: a message row gone in X, a body changed in Y
    gone = db.execute("DELETE FROM messages WHERE thread = %s AND id = %s",
                      (X, ids["X"][3])).rowcount
    changed = db.execute("UPDATE messages SET body = 'tampered' WHERE thread = %s AND id = %s",
                         (Y, ids["Y"][2])).rowcount
    bogus = ids["X"][3].split("-")[0] + "-999"
    db.execute("INSERT INTO messages (thread, id, key, sender, body, sent_at) "
               "VALUES (%s, %s, %s, %s, 'bogus', now())", (X, bogus, sort_key(bogus), users[0]))
    assert (gone, changed) == (1, 1)
    done = duologue(ops_env, "verify")
    assert done.returncode == 1, done.stdout + done.stderr
    assert differing(done) == {X, Y}
    for name in "ZWV":
        assert threads[name] not in done.stdout
    assert f"messages missing: {ids['X'][3]}" in done.stdout
    assert f"messages not in the log: {bogus}" in done.stdout
    assert f"messages differ: {ids['Y'][2]}" in done.stdout
    assert "2 differ" in done.stdout

    whole, tail = duologue_all(ops_env, ("replay", "--thread", X),
                               ("replay", "--thread", Y, "--from", ids["Y"][2]))
    assert whole.returncode == 0 and tail.returncode == 0, whole.stderr + tail.stderr
    assert f"replayed {X}: 10 events" in whole.stdout
    done = duologue(ops_env, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert_projection_is_fold(db, rclient, ops_keys, everything)

    # replay is idempotent: a second run (whole thread, and from an id) changes no row
    before = snapshot(db)
    for done in duologue_all(ops_env, ("replay", "--thread", X),
                             ("replay", "--thread", Y, "--from", ids["Y"][2]),
                             ("replay", "--thread", Y, "--from", ids["Y"][0])):
        assert done.returncode == 0, done.stderr
    assert snapshot(db) == before

    # an archive row gone in Z, a read receipt moved back in W, an archived body forged in X
    assert db.execute("DELETE FROM events WHERE thread = %s AND id = %s",
                      (Z, ids["Z"][4])).rowcount == 1
    assert db.execute("UPDATE events SET payload = jsonb_set(payload, '{body}', '\"forged\"') "
                      "WHERE thread = %s AND id = %s", (X, ids["X"][4])).rowcount == 1
    reader = users[couples["W"][0]]
    assert db.execute(
        "UPDATE read_receipts SET up_to = %s, up_to_key = %s WHERE thread = %s AND reader = %s",
        (ids["W"][1], sort_key(ids["W"][1]), W, reader)).rowcount == 1
    done, some = duologue_all(ops_env, ("verify",), ("verify", "--thread", V, "--thread", Z))
    assert done.returncode == 1, done.stdout + done.stderr
    assert differing(done) == {Z, W, X}
    assert "archive holds 9 events, the log 10" in done.stdout
    assert "read receipts" in done.stdout
    assert f"archive payload of {ids['X'][4]} differs from the log" in done.stdout
    assert some.returncode == 1 and differing(some) == {Z}, some.stdout
    assert "2 threads, 20 events checked" in some.stdout

    for done in duologue_all(ops_env, *(("replay", "--thread", t) for t in (Z, W, X))):
        assert done.returncode == 0, done.stderr
    done = duologue(ops_env, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert_projection_is_fold(db, rclient, ops_keys, everything)
    before = snapshot(db)
    for done in duologue_all(ops_env, *(("replay", "--thread", t) for t in (Z, W, X))):
        assert done.returncode == 0, done.stderr
    assert snapshot(db) == before


def test_replay_refuses_bad_arguments_with_exit_2(ops_env, db):
    thread = thread_id(uid("a"), uid("b"))
    a, b = thread.split(":")[1:]
    cases = (
        (("--thread", "nope"), "not a valid thread id"),
        (("--thread", f"dm:{b}:{a}"), f"sorted: '{thread}'"),  # not canonical: a hint
        (("--thread", ""), "not a valid thread id"),
        (("--thread", thread, "--from", "12-abc"), "not a valid event id"),
        (("--thread", thread, "--from", "-1"), "not a valid event id"),
        (("--thread", thread, "--from", "01-1"), "not a valid event id"),
        ((), "--thread"),
    )
    runs = duologue_all(ops_env, *(("replay", *args) for args, _ in cases))
    for (args, message), done in zip(cases, runs, strict=True):
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert snapshot(db) == {"events": [], "messages": [], "threads": [], "read_receipts": []}


def test_replay_of_a_thread_without_events_exits_1_and_writes_nothing(ops_env, db):
    thread = thread_id(uid("a"), uid("b"))
    done = duologue(ops_env, "replay", "--thread", thread)
    assert done.returncode == 1, done.stderr
    assert f"no thread {thread}" in done.stderr and "Traceback" not in done.stderr
    assert snapshot(db) == {"events": [], "messages": [], "threads": [], "read_receipts": []}


# --- 2. lag is reported, not a difference ---------------------------------------------

async def test_verify_reports_lag_without_failing(ops_env, ops_keys, redis_url, rclient, db,
                                                  log_dir):
    [(a, b), (c, d)] = pairs_of(2)
    first = await seed(redis_url, ops_keys, [(a, b)], 5)
    project_burst(ops_env, log_dir)
    projected = len(stream_of(rclient, ops_keys, thread_id(a, b)))

    client = aioredis.Redis.from_url(redis_url)
    try:
        seeder = Seeder(EventStore(client, ops_keys, 86400))
        ab = thread_id(a, b)
        await seeder.send(ab, a, "late 1")
        await seeder.edit(ab, b, first[ab][1], "late edit")
        await seeder.read(ab, a, first[ab][-1])
        new = await seed(redis_url, ops_keys, [(c, d)], 3)
    finally:
        await client.aclose()
    cd = thread_id(c, d)
    lagging = 3 + len(stream_of(rclient, ops_keys, cd))

    done = duologue(ops_env, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert differing(done) == set()
    total = projected + lagging
    assert f"2 threads, {total} events checked; 0 differ; {lagging} events not yet projected" \
        in done.stdout
    done = duologue(ops_env, "verify", "--thread", ab)
    assert done.returncode == 0 and "3 events not yet projected" in done.stdout, done.stdout

    # once projected, there is no lag and still no difference
    project_burst(ops_env, log_dir)
    done = duologue(ops_env, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{total} events checked; 0 differ; 0 events not yet projected" in done.stdout
    assert_projection_is_fold(db, rclient, ops_keys, sorted([ab, cd]))
    assert len(new[cd]) == 3


# --- 3. status -------------------------------------------------------------------------

def status_json(env: dict[str, str]) -> dict[str, Any]:
    done = duologue(env, "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_status_shows_partitions_workers_and_totals(ops_env, ops_keys, redis_url,
                                                          rclient, db, log_dir):
    threads = await seed(redis_url, ops_keys, pairs_of(6), 8)
    events = sum(len(stream_of(rclient, ops_keys, t)) for t in threads)
    messages = sum(len(ids) for ids in threads.values())
    poisoned = ops_keys.partition(next(iter(threads)))
    rclient.xadd(ops_keys.log(poisoned), {"garbage": "1"})

    # nothing projected yet: everything is lag, nobody owns anything
    found = status_json(ops_env)
    assert [p["partition"] for p in found["partitions"]] == list(range(PARTITIONS))
    assert found["workers"] == []
    assert all(p["owner"] is None and p["checkpoint"] == "0" for p in found["partitions"])
    assert found["totals"]["lag_events"] == events + 1
    assert found["totals"]["stream_events"] == events
    assert found["totals"]["archived_events"] == 0
    for p in found["partitions"]:
        assert p["lag_events"] == rclient.xlen(ops_keys.log(p["partition"])), p
        assert (p["lag_seconds"] > 0) == (p["lag_events"] > 0), p

    projector = ProjectorProcess(ops_env).start(log_dir)
    try:
        deadline = time.monotonic() + 30
        while True:
            found = status_json(ops_env)
            totals = found["totals"]
            # a worker's row lists its partitions from its next heartbeat on (<= 2 s)
            owning = sum(w["partitions"] for w in found["workers"])
            if (totals["lag_events"], totals["pending"], totals["archived_events"],
                    owning) == (0, 0, events, PARTITIONS):
                break
            assert projector.process and projector.process.poll() is None, projector.log()
            assert time.monotonic() < deadline, found
            time.sleep(0.2)
        [worker] = found["workers"]
        assert worker["alive"] is True and worker["partitions"] == PARTITIONS
        assert worker["pid"] == projector.process.pid
        for p in found["partitions"]:
            log: Any = rclient.xrevrange(ops_keys.log(p["partition"]), "+", "-", count=1)
            assert p["stream"] == ops_keys.log(p["partition"])
            assert p["checkpoint"] == (log[0][0].decode() if log else "0"), p
            assert p["lag_events"] == 0 and p["lag_seconds"] == 0 and p["pending"] == 0, p
            assert p["dead_letters"] == (1 if p["partition"] == poisoned else 0), p
            assert p["owner"] == worker["name"], p
        assert sum(p["projected"] for p in found["partitions"]) == events + 1
        # what Redis holds per partition: the thread streams' events, every key's bytes
        assert sum(p["redis_events"] for p in found["partitions"]) == events
        assert all(p["redis_bytes"] > 0 for p in found["partitions"] if p["redis_events"])
        assert totals.pop("redis_bytes") == sum(p["redis_bytes"] for p in found["partitions"])
        assert totals == {"stream_threads": len(threads), "stream_events": events,
                          "archived_events": events, "projected_messages": messages,
                          "projected_threads": len(threads), "dead_letters": 1,
                          "lag_events": 0, "pending": 0}

        human = duologue(ops_env, "status")
        assert human.returncode == 0, human.stderr
        for title in ("Partition logs", "Workers", "Log and projection"):
            assert title in human.stdout
        assert worker["name"] in human.stdout
        every = duologue(ops_env, "status", "--all")
        assert every.returncode == 0, every.stderr
        shown = _partition_rows(human.stdout)
        assert _partition_rows(every.stdout) == list(range(PARTITIONS))
        active = sorted({ops_keys.partition(t) for t in threads})
        assert shown == active
    finally:
        stopped = projector.terminate()
    assert stopped == 0, projector.log()

    # the worker left: no owner, no live worker, the checkpoints stay
    found = status_json(ops_env)
    assert all(p["owner"] is None for p in found["partitions"])
    assert not any(w["alive"] for w in found["workers"])
    assert found["totals"]["lag_events"] == 0
    assert_projection_is_fold(db, rclient, ops_keys, sorted(threads))


def _partition_rows(text: str) -> list[int]:
    """The partition numbers listed in the human status output's first table."""
    table = text.split("Workers")[0]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if cells and cells[0].isdigit():
            rows.append(int(cells[0]))
    return rows


def test_status_and_verify_on_an_empty_database(ops_env):
    found = status_json(ops_env)
    assert found["workers"] == [] and len(found["partitions"]) == PARTITIONS
    assert found["totals"] == {"stream_threads": 0, "stream_events": 0, "archived_events": 0,
                               "projected_messages": 0, "projected_threads": 0,
                               "dead_letters": 0, "lag_events": 0, "pending": 0,
                               "redis_bytes": 0}
    done = duologue(ops_env, "verify")
    assert done.returncode == 0, done.stderr
    assert "0 threads, 0 events checked; 0 differ" in done.stdout

