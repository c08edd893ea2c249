"""``duologue rebuild``: fresh tables from the archive, swapped in while the system runs.

Black box through the command line (a gateway, a live projector, WebSocket writers and
HTTP readers around it); the one white-box test drives ``projector.rebuild`` in-process
to corrupt the fresh tables before the swap.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time

import httpx
import psycopg
import pytest

from domain.ids import event_key, thread_id
from projector import rebuild as rebuilding
from tests.ops_support import (
    assert_projection_is_fold,
    duologue,
    duologue_all,
    pairs_of,
    project_burst,
    seed,
    snapshot,
    status_json,
    wait_projected,
)
from tests.projection_support import PARTITIONS
from tests.support import ROOT, Client, ProjectorProcess, token

PROJECTION = ("messages", "threads", "read_receipts")

# each test runs the CLI and the projector as processes over a database of its own; a
# rebuild of 400,000 events plus dropping that database took 76 s on a loaded machine
pytestmark = pytest.mark.timeout(300)


def leftovers(conn: psycopg.Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
        "AND (tablename LIKE '%\\_next' OR tablename LIKE '%\\_old')")]


def assert_analyst_can_read(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL ROLE duologue_analyst")
        for table in (*PROJECTION, "events"):
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()


def assert_indexes(conn: psycopg.Connection) -> None:
    found = {(str(t), str(i)) for t, i in conn.execute(
        "SELECT tablename, indexname FROM pg_indexes WHERE schemaname = 'public' "
        "AND tablename = ANY(%s)", (list(PROJECTION),))}
    assert found == {("messages", "messages_pkey"), ("threads", "threads_pkey"),
                     ("threads", "threads_user_a"), ("threads", "threads_user_b"),
                     ("threads", "threads_last_at"), ("read_receipts", "read_receipts_pkey"),
                     ("messages", "messages_search")}


def rebuild_cli(env: dict[str, str]) -> str:
    done = duologue(env, "rebuild")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "swapped in" in done.stdout
    return done.stdout


# --- 4. rebuild while the system is in use ---------------------------------------------

class Writer:
    """Two users talking over the WebSocket: sends, edits, deletes and receipts."""

    def __init__(self, first: Client, second: Client) -> None:
        self.clients = (first, second)
        self.live: dict[str, list[str]] = {first.user: [], second.user: []}
        self.last = ""
        self.thread = ""
        self.acks = 0

    async def run(self, stop: asyncio.Event) -> None:
        for step in itertools.count():
            if stop.is_set():
                return
            me, other = self.clients[step % 2], self.clients[1 - step % 2]
            if step % 5 == 3 and self.live[me.user]:
                frame = {"type": "edit", "thread": self.thread,
                         "target": self.live[me.user][-1], "body": f"edit {step}"}
            elif step % 7 == 6 and self.live[me.user]:
                frame = {"type": "delete", "thread": self.thread,
                         "target": self.live[me.user].pop(0)}
            elif step % 4 == 2 and self.last:
                frame = {"type": "read", "thread": self.thread, "up_to": self.last}
            else:
                frame = {"type": "send", "to": other.user, "body": f"{me.user} {step}"}
            answer = await me.request(frame)
            assert answer["type"] == "ack", (frame, answer)
            self.acks += 1
            if frame["type"] == "send":
                self.thread, self.last = answer["thread"], answer["id"]
                self.live[me.user].append(answer["id"])
            await asyncio.sleep(0.003)


class Reader:
    """GET a thread's messages (and the thread list) every ~20 ms; every answer recorded."""

    def __init__(self, base: str, threads: list[tuple[str, str]]) -> None:
        self.base = base
        self.threads = threads  # (thread, a participant)
        self.codes: list[tuple[float, int, str]] = []
        self.seen: dict[str, str] = {}  # newest projected_up_to per thread
        self.regressions: list[tuple[str, str, str]] = []

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as http:
            for step in itertools.count():
                if stop.is_set():
                    return
                thread, user = self.threads[step % len(self.threads)]
                headers = {"Authorization": f"Bearer {token(user)}"}
                if step % 5 == 4:
                    answer = await http.get("/v1/threads", headers=headers)
                else:
                    answer = await http.get(f"/v1/threads/{thread}/messages",
                                            params={"limit": "200"}, headers=headers)
                    if answer.status_code == 200:
                        self._progress(thread, answer.json()["projected_up_to"])
                self.codes.append((time.monotonic(), answer.status_code, answer.text[:200]))
                await asyncio.sleep(0.02)

    def _progress(self, thread: str, up_to: str) -> None:
        before = self.seen.get(thread, "0")
        if event_key(up_to) < event_key(before):
            self.regressions.append((thread, before, up_to))
        self.seen[thread] = max(before, up_to, key=event_key)


async def test_rebuild_during_live_writes_readers_keep_working(
        start_gateway, ops_env, ops_keys, redis_url, rclient, db, fresh_database, log_dir):
    gateway = start_gateway(DATABASE_URL=fresh_database, DUOLOGUE_PARTITIONS=str(PARTITIONS))
    projector = ProjectorProcess(ops_env).start(log_dir)
    try:
        seeded = await seed(redis_url, ops_keys, pairs_of(16), 120)
        wait_projected(db, rclient, ops_keys, sorted(seeded))
        writers = []
        for a, b in pairs_of(3):
            writers.append(Writer(await Client.connect(gateway.ws_url, a),
                                  await Client.connect(gateway.ws_url, b)))
        watched = [(t, t.split(":")[1]) for t in sorted(seeded)[:4]]
        watched += [(thread_id(w.clients[0].user, w.clients[1].user), w.clients[0].user)
                    for w in writers]
        reader = Reader(gateway.http_url, watched)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(w.run(stop)) for w in writers]
        tasks.append(asyncio.create_task(reader.run(stop)))
        try:
            await asyncio.sleep(0.5)
            acks_before = sum(w.acks for w in writers)
            started = time.monotonic()
            env = {**{k: v for k, v in os.environ.items()
                      if k not in ("REDIS_URL", "DATABASE_URL", "DUOLOGUE_PREFIX")}, **ops_env}
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "duologue.cli", "rebuild", cwd=ROOT, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(process.communicate(), 30)
            finished = time.monotonic()
            acks_during = sum(w.acks for w in writers) - acks_before
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            for client in writer.clients:
                await client.close()
        assert not [r for r in results if isinstance(r, BaseException)], results
        assert process.returncode == 0, out.decode() + err.decode()
        assert b"swapped in" in out

        # the system kept working throughout
        assert [c for c in reader.codes if c[1] != 200] == []
        during = [c for c in reader.codes if started <= c[0] <= finished]
        assert len(during) >= 5, (len(during), finished - started)
        assert acks_during > 0
        assert reader.regressions == []

        # drain: the live projector catches up with everything written
        threads = sorted([*seeded, *(w.thread for w in writers)])
        deadline = time.monotonic() + 30
        while (totals := status_json(ops_env)["totals"])["lag_events"] or totals["pending"]:
            assert time.monotonic() < deadline, totals
            time.sleep(0.1)
        wait_projected(db, rclient, ops_keys, threads)
        assert totals["stream_events"] == totals["archived_events"]
        assert projector.process is not None and projector.process.poll() is None
    finally:
        stopped = projector.terminate()
    assert stopped == 0, projector.log()

    done = duologue(ops_env, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 differ; 0 events not yet projected" in done.stdout
    assert_projection_is_fold(db, rclient, ops_keys, threads)
    assert_analyst_can_read(db)
    assert leftovers(db) == []
    assert_indexes(db)


# --- 5. rebuild on nothing, twice, and a rebuild that must not swap ---------------------

def test_rebuild_of_an_empty_database_twice(ops_env, db):
    for _ in range(2):
        assert "rebuilt 0 threads from 0 archived events" in rebuild_cli(ops_env)
        assert snapshot(db) == {"events": [], "messages": [], "threads": [],
                                "read_receipts": []}
        assert leftovers(db) == []
        assert_indexes(db)
        assert_analyst_can_read(db)


async def test_rebuild_twice_gives_the_projection_the_projector_built(
        ops_env, ops_keys, redis_url, rclient, db, log_dir):
    threads = await seed(redis_url, ops_keys, pairs_of(5), 12)
    project_burst(ops_env, log_dir)
    projected = snapshot(db)
    assert projected["messages"]
    for _ in range(2):
        out = rebuild_cli(ops_env)
        assert f"rebuilt 5 threads from {len(projected['events'])} archived events" in out
        assert snapshot(db) == projected  # every row, every column
        assert leftovers(db) == []
        assert_indexes(db)
        assert_analyst_can_read(db)
    assert_projection_is_fold(db, rclient, ops_keys, sorted(threads))
    done = duologue(ops_env, "verify")
    assert done.returncode == 0, done.stdout


async def test_fresh_tables_that_do_not_match_are_never_swapped_in(
        ops_env, ops_keys, redis_url, rclient, db, fresh_database, log_dir):
    threads = await seed(redis_url, ops_keys, pairs_of(3), 10)
    project_burst(ops_env, log_dir)
    live = snapshot(db)
    victim = sorted(threads)[1]

    # step by step: load, index, corrupt messages_next, check
    rebuilding._prepare(db)
    mark = rebuilding.watermark(db)
    assert rebuilding.load(fresh_database, mark, lambda *_: None) == len(live["events"])
    for statement in rebuilding.INDEXES:
        db.execute(statement.encode())
    rebuilding.check(db, mark)  # as loaded, the fresh tables match
    db.execute("DELETE FROM messages_next WHERE thread = %s AND id = %s",
               (victim, threads[victim][0]))
    with pytest.raises(rebuilding.RebuildError, match=victim):
        rebuilding.check(db, mark)
    assert snapshot(db) == live

    # the whole rebuild, with the fresh tables corrupted while it catches up
    def corrupt(phase: str, _: int) -> None:
        if phase == "catch-up":
            db.execute("UPDATE threads_next SET events = events + 1 WHERE thread = %s",
                       (victim,))

    with pytest.raises(rebuilding.RebuildError, match=victim):
        rebuilding.rebuild(fresh_database, corrupt)
    assert snapshot(db) == live
    assert_analyst_can_read(db)

    # and an honest rebuild afterwards swaps and cleans up
    rebuild_cli(ops_env)
    assert snapshot(db) == live and leftovers(db) == []


async def test_rebuild_refuses_an_archive_it_cannot_fold_and_replay_heals_it(
        ops_env, ops_keys, redis_url, rclient, db, log_dir):
    threads = await seed(redis_url, ops_keys, pairs_of(3), 10)
    project_burst(ops_env, log_dir)
    live = snapshot(db)
    victim = sorted(threads)[0]
    assert db.execute("UPDATE events SET payload = '{\"kind\": \"Nonsense\"}' "
                      "WHERE thread = %s AND id = %s", (victim, threads[victim][2])).rowcount == 1
    damaged = snapshot(db)

    done = duologue(ops_env, "rebuild")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "differ from the archive" in done.stderr and victim in done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(db) == damaged  # live tables as they were
    assert not [t for t in leftovers(db) if t.endswith("_old")]

    done = duologue(ops_env, "verify")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert [line for line in done.stdout.splitlines() if line.startswith("DIFFERS")] == \
        [f"DIFFERS {victim}"]
    assert f"archive payload of {threads[victim][2]} does not decode" in done.stdout

    done = duologue(ops_env, "replay", "--thread", victim)
    assert done.returncode == 0, done.stderr
    rebuild_cli(ops_env)
    assert leftovers(db) == []
    assert_projection_is_fold(db, rclient, ops_keys, sorted(threads))
    healed = snapshot(db)
    assert {t: healed[t] for t in PROJECTION} == {t: live[t] for t in PROJECTION}


async def test_the_swap_locks_the_tables_in_the_order_readers_do(
        ops_env, ops_keys, redis_url, rclient, db, fresh_database, log_dir):
    """A gateway read locks ``threads`` first, then ``messages`` (then ``read_receipts``).

    One statement holds the first lock for microseconds before it takes the next; the
    reader here holds it in a transaction so the moment can be placed exactly: the swap
    then waits for ``threads``, and the reader's next table must not be locked by it.
    """
    threads = await seed(redis_url, ops_keys, pairs_of(2), 6)
    project_burst(ops_env, log_dir)
    live = snapshot(db)
    rebuilding._prepare(db)
    mark = rebuilding.watermark(db)
    rebuilding.load(fresh_database, mark, lambda *_: None)
    for statement in rebuilding.INDEXES:
        db.execute(statement.encode())
    rebuilding.check(db, mark)

    with psycopg.connect(fresh_database) as reader, \
            psycopg.connect(fresh_database, autocommit=True) as swapper:
        reader.execute("SET lock_timeout = '5s'")
        reader.execute("SELECT count(*) FROM threads").fetchone()  # holds threads, shared
        swapping = asyncio.create_task(asyncio.to_thread(rebuilding.swap, swapper, mark))
        deadline = time.monotonic() + 10
        while not db.execute("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %s "
                             "AND NOT granted)", (swapper.info.backend_pid,)).fetchone()[0]:
            assert time.monotonic() < deadline and not swapping.done()
            await asyncio.sleep(0.01)
        reader.execute("SELECT count(*) FROM messages").fetchone()  # the reader's next table
        reader.execute("SELECT count(*) FROM read_receipts").fetchone()
        reader.commit()
        await asyncio.wait_for(swapping, 15)
    assert leftovers(db) == []
    assert snapshot(db) == live
    assert_projection_is_fold(db, rclient, ops_keys, sorted(threads))


# --- 7. rebuild excludes replay and a second rebuild --------------------------------------

SYNTHETIC_ARCHIVE = """
INSERT INTO events (thread, id, key, kind, payload, ts)
SELECT 'dm:u' || (g %% 2000) || ':v' || (g %% 2000), (1700000000000 + g) || '-0',
       duologue_event_key((1700000000000 + g) || '-0'), 'MessageSent',
       jsonb_build_object('kind', 'MessageSent', 'sender', 'u' || (g %% 2000),
                          'body', 'message ' || g, 'client_msg_id', 'c' || g),
       duologue_ts(1700000000000 + g)
FROM generate_series(1, %s) AS g
"""


def test_a_replay_or_a_second_rebuild_during_a_rebuild_refuses_and_nothing_is_undone(
        ops_env, db):
    """A replay during a rebuild would be undone by its swap; two rebuilds would swap over
    each other. While one rebuild runs, both refuse with one readable line (exit 1), and
    work once it is done; the rebuilt projection equals the archive's fold."""
    db.execute(SYNTHETIC_ARCHIVE, (100_000,))
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL", "DUOLOGUE_PREFIX")}
    first = subprocess.Popen([sys.executable, "-m", "duologue.cli", "rebuild"], cwd=ROOT,
                             env={**env, **ops_env}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not db.execute("SELECT to_regclass('messages_next')").fetchone()[0]:
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.02)
        # Frozen mid-rebuild (its lock held by its session), however slow the machine is,
        # the first rebuild is surely still running while the other two start.
        os.kill(first.pid, signal.SIGSTOP)
        try:
            replay, second = duologue_all(ops_env, ("replay", "--thread", "dm:u1:v1"),
                                          ("rebuild",))
        finally:
            os.kill(first.pid, signal.SIGCONT)
        out, err = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, out + err
    assert second.returncode == 1, second.stdout + second.stderr
    assert "another rebuild, or a replay, is running" in second.stderr, second.stderr
    assert replay.returncode == 1, replay.stdout + replay.stderr
    assert "a rebuild is running" in replay.stderr, replay.stderr
    for done in (second, replay):
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 3
    assert db.execute("SELECT count(*), sum(events) FROM threads").fetchone() == (2000, 100_000)
    assert leftovers(db) == []
    for done in duologue_all(ops_env, ("replay", "--thread", "dm:u1:v1"), ("verify",)):
        assert done.returncode == 0, done.stdout + done.stderr
