"""The log as a system of record (protocol.md section 7, issue 7): nothing acked is ever
lost, by the projector when partitions change owner nor by the operators' repair tools.

Each test attacks one guarantee through what users and operators have: WebSockets to a
real gateway process, ``duologue`` commands run as subprocesses, SQL on the database.
The yardstick is always what users were told: every acked event id, and the domain fold
of the thread streams (or of the archive, for threads Redis no longer holds).

1. Projector workers join and leave (SIGTERM, SIGKILL) under a light, bursty load: every
   acked event is archived exactly once. (The deterministic form of the v1 loss, a read
   in flight while its worker gives the partition up, is in ``test_rebalance.py``.)
2. ``duologue replay --thread`` after Redis lost part or all of a thread stream: the
   archive, the projection and the history keep every acked event.
3. ``replay`` during a ``rebuild``: the replay's repair is not undone by the swap (two
   rebuilds at once: ``test_rebuild.py``).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import psycopg

from adapters.record import Keys
from domain.ids import event_key, thread_id
from tests.http_support import auth
from tests.projection_support import (
    PARTITIONS,
    Expected,
    Fleet,
    Stream,
    Workload,
    actual_projection,
    assert_projection,
    dead_letters,
    drain_problems,
    expected_projection,
    log_lines,
    projection_diff,
    tail,
    thread_streams,
)
from tests.support import ROOT, Client, uid

# --- helpers ----------------------------------------------------------------------------


def duologue(env: Mapping[str, str], *args: str, timeout: float = 90
             ) -> subprocess.CompletedProcess[str]:
    """``duologue ARGS`` as an operator runs it, with exactly this environment."""
    return subprocess.run([sys.executable, "-m", "duologue.cli", *args], cwd=ROOT,
                          env=_cli_env(env), capture_output=True, text=True, timeout=timeout)


def duologue_start(env: Mapping[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "duologue.cli", *args], cwd=ROOT,
                            env=_cli_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _cli_env(env: Mapping[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("REDIS_URL", "DATABASE_URL", "DUOLOGUE_PREFIX", "DUOLOGUE_PARTITIONS")}
    return {**base, "COLUMNS": "200", **env}


def finish(process: subprocess.Popen[str], timeout: float = 90
           ) -> subprocess.CompletedProcess[str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"{process.args} did not finish in {timeout}s:\n{out}\n{err}"
                             ) from None
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def shown(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n" \
           f"{done.stderr[-3000:]}"


def thread_in(keys: Keys, partition: int, avoid: Iterable[str] = ()) -> tuple[str, str, str]:
    """(thread, a, b): a conversation of two fresh users whose thread is in ``partition``."""
    while True:
        a, b = uid("a"), uid("b")
        thread = thread_id(a, b)
        if keys.partition(thread) == partition and thread not in avoid:
            return thread, a, b


def archived_ids(conn: psycopg.Connection, threads: Iterable[str]) -> dict[str, list[str]]:
    """Each thread's archived event ids, in key order (duplicates kept, if any)."""
    out: dict[str, list[str]] = defaultdict(list)
    for thread, event_id in conn.execute(
            "SELECT thread, id FROM events WHERE thread = ANY(%s) ORDER BY thread, key",
            (list(threads),)):
        out[thread].append(event_id)
    return out


def acked_problems(conn: psycopg.Connection, acked: Mapping[str, list[str]]) -> list[str]:
    """Acked events the archive lacks or holds twice, and archived events never acked."""
    found = archived_ids(conn, acked)
    problems = []
    for thread, ids in sorted(acked.items()):
        have = found.get(thread, [])
        counts = Counter(have)
        missing = [i for i in ids if i not in counts]
        twice = [i for i, n in counts.items() if n > 1]
        unasked = sorted(set(have) - set(ids), key=event_key)
        if missing:
            problems.append(f"{thread}: {len(missing)} of {len(ids)} acked events not in "
                            f"the archive: {missing[:6]}")
        if twice:
            problems.append(f"{thread}: archived more than once: {twice[:6]}")
        if unasked:
            problems.append(f"{thread}: archived but never acked: {unasked[:6]}")
    return problems


def leftovers(conn: psycopg.Connection) -> list[str]:
    """Tables a rebuild leaves behind when it did not finish cleanly."""
    return [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
        "AND (tablename LIKE '%\\_next' OR tablename LIKE '%\\_old') ORDER BY 1")]


def archive_streams(conn: psycopg.Connection, threads: Iterable[str]) -> dict[str, Stream]:
    """Each thread's archived events as (id, payload JSON), in id order."""
    out: dict[str, Stream] = defaultdict(list)
    for thread, event_id, payload in conn.execute(
            "SELECT thread, id, payload::text FROM events WHERE thread = ANY(%s) "
            "ORDER BY thread, key", (list(threads),)):
        out[thread].append((event_id, payload))
    return dict(out)


def assert_projection_of(conn: psycopg.Connection, streams: Mapping[str, Stream]) -> None:
    """The projection rows of these threads equal the fold of these streams."""
    want = expected_projection(streams)
    everything = actual_projection(conn)
    threads = set(streams)

    def mine(rows: Mapping[Any, Any]) -> dict[Any, Any]:
        return {k: v for k, v in rows.items()
                if (k[0] if isinstance(k, tuple) else k) in threads}

    got = Expected(mine(everything.threads), mine(everything.messages),
                   mine(everything.receipts), mine(everything.events))
    problems = projection_diff(want, got)
    assert not problems, "projection != fold of the log:\n  " + "\n  ".join(problems)


# --- 1. partitions change owner under light, bursty traffic ------------------------------

REBALANCE_EVERY = 2.0  # docs/projector.md: every 2 s each worker heartbeats and rebalances
FILL_EVERY = 0.08  # the trickle: one command every 80 ms


class Watch:
    """The projector workers as Postgres shows them to an operator: ``projector_workers``
    (process id, session, last heartbeat) and the partition locks their sessions hold
    (``pg_locks``), polled."""

    def __init__(self, url: str, prefix: str, keys: Keys) -> None:
        from projector.ledger import lock_id  # the name of each partition's lock

        self.conn = psycopg.connect(url, autocommit=True)
        self.prefix = prefix
        self.partition_of = {lock_id(keys.log(p)) & (2**64 - 1): p
                             for p in range(keys.partitions)}

    def workers(self) -> dict[int, tuple[int, float]]:
        """Process id -> (its session's backend pid, its last heartbeat as Unix time)."""
        return {int(pid): (int(backend), float(beat)) for pid, backend, beat in
                self.conn.execute(
                    "SELECT pid, backend_pid, extract(epoch FROM heartbeat_at) "
                    "FROM projector_workers WHERE prefix = %s", (self.prefix,))}

    def held(self) -> dict[int, set[int]]:
        """Backend pid -> the partitions whose lock it holds."""
        out: dict[int, set[int]] = defaultdict(set)
        for backend, key in self.conn.execute(
                "SELECT pid, (classid::int8 << 32) | objid::int8 FROM pg_locks "
                "WHERE locktype = 'advisory' AND objsubid = 1 AND granted "
                "AND database = (SELECT oid FROM pg_database "
                "                WHERE datname = current_database())"):
            partition = self.partition_of.get(int(key) & (2**64 - 1))
            if partition is not None:
                out[int(backend)].add(partition)
        return out

    def sole_owner(self) -> int | None:
        """The process id of the one worker holding every partition, if that is the state."""
        held = self.held()
        workers = self.workers()
        full = [pid for pid, (backend, _) in workers.items()
                if len(held.get(backend, ())) == PARTITIONS]
        return full[0] if full and len(held) == 1 else None

    async def until(self, what: str, test: Any, timeout: float, every: float = 0.005) -> Any:
        """Poll until ``test()`` is truthy; return it (None on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = test()
            if found:
                return found
            await asyncio.sleep(every)
        print(f"  gave up waiting for {what}: {self.workers()} {dict(self.held())}")
        return None

    def close(self) -> None:
        self.conn.close()


class Trickle:
    """One command every ``FILL_EVERY`` on threads of the partitions a worker keeps when
    another joins: a worker that reads them is always blocked in a read, waiting."""

    def __init__(self, work: Workload, models: list[Any]) -> None:
        self.work = work
        self.models = models
        self.on = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        n = 0
        while True:
            await self.on.wait()
            await self.work._step(self.models[n % len(self.models)])
            n += 1
            await asyncio.sleep(FILL_EVERY)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class Churn:
    """Projector processes joining and leaving, a join aimed from the heartbeats."""

    def __init__(self, fleet: Fleet, watch: Watch, work: Workload, keys: Keys,
                 rng: random.Random) -> None:
        self.fleet, self.watch, self.work, self.keys, self.rng = fleet, watch, work, keys, rng
        self.cold = [m for m in work.models if keys.partition(m.thread) < PARTITIONS // 2]
        self.hot = [m for m in work.models if keys.partition(m.thread) >= PARTITIONS // 2]
        assert len(self.cold) >= 8 and len(self.hot) >= 8, (len(self.cold), len(self.hot))
        self.trickle = Trickle(work, self.cold)
        self.processes: dict[int, Any] = {}
        self.latencies = [0.3]  # from start to first heartbeat, measured as we go
        self.hits = 0
        self.log: list[str] = []

    def start(self) -> int:
        process = self.fleet.start()
        assert process.process is not None
        self.processes[process.process.pid] = process
        return process.process.pid

    async def sole_owner(self) -> int:
        pid = await self.watch.until("one worker owning everything", self.watch.sole_owner, 20)
        assert pid is not None, [tail(p) for p in self.processes.values()]
        return int(pid)

    async def aimed_join(self, old: int) -> int:
        """Start a worker whose first heartbeat comes 0.2 s after one of ``old``'s: both
        rebalance again 2 s later, ``old`` a little earlier, giving partitions 4-7 up just
        after a trickle entry (a read is in flight), the newcomer taking them a fraction
        of a second later. Then one command on a thread of those at once, and more."""
        watch, trickle = self.watch, self.trickle
        trickle.on.set()
        old_backend, beat = watch.workers()[old]
        latency = sorted(self.latencies)[len(self.latencies) // 2]
        start_at = beat + 0.2 - latency
        while start_at < time.time() + 0.02:
            start_at += REBALANCE_EVERY + FILL_EVERY / 2
        await asyncio.sleep(start_at - time.time())
        started = time.time()
        new = self.start()
        seen = await watch.until("the newcomer's heartbeat",
                                 lambda: watch.workers().get(new), 10, every=0.01)
        assert seen is not None, tail(self.processes[new])
        new_backend, first_beat = seen
        self.latencies.append(first_beat - started)
        lead = first_beat - watch.workers()[old][1]
        given = await watch.until(
            "the first worker giving partitions up",
            lambda: len(watch.held().get(old_backend, ())) < PARTITIONS and time.time(), 5)
        trickle.on.clear()
        taken = await watch.until(
            "the newcomer taking them",
            lambda: (parts := watch.held().get(new_backend)) and (time.time(), parts), 5)
        gap = None
        if given and taken:
            gap = taken[0] - given
            await self._probe(new, taken[1])
            self.hits += gap < 0.4
        self.log.append(f"start latency {self.latencies[-1]:.2f}s, heartbeat lead "
                        f"{lead:+.2f}s, gap {gap if gap is None else round(gap, 3)}")
        return new

    async def _probe(self, new: int, partitions: set[int]) -> None:
        model = self.rng.choice([m for m in self.hot
                                 if self.keys.partition(m.thread) in partitions])
        partition = self.keys.partition(model.thread)
        newcomer = self.processes[new]
        # its lock is the start of a takeover; its log line, the end
        await self.watch.until("the takeover's end", lambda: any(
            r["partition"] == partition for r in log_lines(newcomer, "partition_taken")),
            0.3, every=0.003)
        for _ in range(4):  # the first is the one a read in flight may have taken
            await self.work._step(model)

    async def leave(self, *pids: int) -> None:
        for pid in pids:
            if self.rng.random() < 0.5:
                self.processes[pid].kill()
                self.log.append(f"SIGKILL {pid}")
            else:
                await asyncio.to_thread(self.processes[pid].terminate)
                self.log.append(f"SIGTERM {pid}")

    async def close(self) -> None:
        await self.trickle.close()
        for process in self.processes.values():
            await asyncio.to_thread(process.terminate)


async def test_workers_joining_and_leaving_under_a_light_bursty_load_lose_no_acked_event(
        gateway, fleet, rclient, db, pkeys, fresh_database, prefix):
    """Defect 1, black box: projector processes, a gateway, WebSocket clients, and what
    Postgres shows an operator of the workers (``projector_workers``, ``pg_locks``).

    Each round: a burst of 50-200 commands over 60 threads; then a trickle on threads of
    partitions 0-3 while a second worker starts, timed from the heartbeats so that it
    takes partitions 4-7 over a fraction of a second after the first worker gave them up
    (the first being blocked in a read meanwhile); the moment it has, commands on a
    thread of 4-7; now and then a third worker joins too; then workers leave (SIGTERM or
    SIGKILL, at random) until one is left. v1 dropped the entry that the first worker's
    read returned and then skipped it. Every acked event must be archived exactly once,
    the projection must be the fold of the streams, nothing pending, no dead letter,
    ``verify`` clean."""
    seed = int(os.environ.get("DUOLOGUE_TEST_SEED") or random.randrange(1 << 30))
    print(f"seed {seed}")
    rng = random.Random(seed)
    watch = Watch(fresh_database, prefix, pkeys)
    rounds = 7
    async with Workload(gateway.ws_url, users=24, threads=60, seed=seed) as work:
        churn = Churn(fleet, watch, work, pkeys, rng)
        try:
            churn.start()
            for round_ in range(rounds):
                mark = len(churn.log)
                await work.run(rng.randint(50, 200), rate=rng.choice((300, 600, 1200)))
                old = await churn.sole_owner()
                new = await churn.aimed_join(old)
                pids = [old, new]
                if rng.random() < 0.3:  # a third joins, at a random moment
                    await asyncio.sleep(rng.uniform(0, 1))
                    pids.append(churn.start())
                    churn.log.append(f"third worker {pids[-1]}")
                    await work.run(rng.randint(20, 60), rate=50)
                else:
                    await asyncio.sleep(0.3)
                rng.shuffle(pids)
                await churn.leave(*pids[1:])
                print(f"round {round_}: {'; '.join(churn.log[mark:])}")
        finally:
            await churn.close()
            watch.close()
    fleet.burst()
    acked = {m.thread: m.ids for m in work.models}
    problems = acked_problems(db, acked)
    assert not problems, (f"seed {seed}: acked events lost or doubled while partitions "
                          "changed owner:\n  " + "\n  ".join(problems + churn.log))
    assert_projection(db, thread_streams(rclient, pkeys))
    assert drain_problems(rclient, db, pkeys) == [], seed
    assert dead_letters(db) == [], seed
    verify = duologue(fleet.env, "verify")
    assert verify.returncode == 0, shown(verify)
    assert churn.hits >= 1, (f"seed {seed}: no newcomer took partitions over within 0.4 s "
                             "of their release, so this run tested nothing:\n  "
                             + "\n  ".join(churn.log))


async def _conversation(first: Client, second: Client, tag: str) -> list[str]:
    """Ten messages, an edit, a delete and read receipts, all acked; their ids in order."""
    ids: list[str] = []

    async def ok(answer: dict[str, Any]) -> None:
        assert answer["type"] == "ack", answer
        ids.append(answer["id"])

    for i in range(8):
        speaker, listener = (first, second) if i % 2 == 0 else (second, first)
        await ok(await speaker.say(listener.user, f"{tag} {speaker.user} says {i}"))
    thread = thread_id(first.user, second.user)
    sent = list(ids)
    await ok(await first.request({"type": "edit", "thread": thread, "target": sent[6],
                                  "body": f"{tag} edited"}))
    await ok(await second.request({"type": "delete", "thread": thread, "target": sent[5]}))
    await ok(await second.request({"type": "read", "thread": thread, "up_to": sent[6]}))
    await ok(await first.say(second.user, f"{tag} after the edit"))
    await ok(await second.say(first.user, f"{tag} the last word"))
    await ok(await first.request({"type": "read", "thread": thread, "up_to": ids[-1]}))
    return ids


def snapshot(conn: psycopg.Connection, threads: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row (every column) of the archive and the projection for these threads."""
    return {table: conn.execute(f"SELECT * FROM {table} WHERE thread = ANY(%s) "
                                "ORDER BY 1, 2", (threads,)).fetchall()
            for table in ("events", "messages", "threads", "read_receipts")}


async def history_page(gateway: Any, user: str, thread: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=gateway.http_url, headers=auth(user),
                                 timeout=15) as client:
        answer = await client.get(f"/v1/threads/{thread}/messages", params={"limit": "200"})
    assert answer.status_code == 200, answer.text
    return answer.json()["messages"]


async def synced_ids(client: Client, thread: str) -> tuple[list[str], dict[str, Any]]:
    """``sync(after=0)`` on ``thread``: the ids it replays, and its ``synced`` frame."""
    client.frames.clear()
    await client.send({"type": "sync", "thread": thread, "after": "0"})
    done = await client.next("synced", thread=thread)
    return [f["id"] for f in client.events(thread)], done


def merged_streams(*streams: Stream) -> Stream:
    events: dict[str, str] = {}
    for stream in streams:
        events.update(stream)
    return sorted(events.items(), key=lambda item: event_key(item[0]))


async def test_replay_after_redis_lost_part_of_a_stream_keeps_every_archived_event(
        start_gateway, fleet, rclient, db, pkeys, fresh_database):
    """Defect 2. Four conversations over the WebSocket, projected. Then Redis loses, by
    hand, the tail of X's stream (XDEL of its last five entries), three entries in the
    middle of Y's, and Z's whole stream; V keeps everything. ``duologue replay --thread``
    of each must keep every acked event in the archive (the durable copy) and leave the
    projection and the HTTP history as they were; ``verify`` must not call the
    projection's rows of those events damaged ("not in the log"), and be clean after the
    replays; ``sync`` from 0 still delivers every acked event; sending goes on."""
    gateway = start_gateway(DUOLOGUE_PARTITIONS=str(PARTITIONS), DATABASE_URL=fresh_database)
    env = fleet.env
    names = "XYZV"
    users = {n: (uid(f"{n.lower()}a"), uid(f"{n.lower()}b")) for n in names}
    clients = {n: (await Client.connect(gateway.ws_url, a), await Client.connect(gateway.ws_url, b))
               for n, (a, b) in users.items()}
    try:
        acked = {n: await _conversation(*clients[n], n) for n in names}
        thread = {n: thread_id(*users[n]) for n in names}
        everything = [thread[n] for n in names]
        fleet.burst()
        assert not acked_problems(db, {thread[n]: acked[n] for n in names})
        before_streams = thread_streams(rclient, pkeys)
        assert_projection(db, before_streams)
        before = snapshot(db, everything)
        pages = {n: await history_page(gateway, users[n][0], thread[n]) for n in names}
        assert len(pages["X"]) == 10, pages["X"]  # ten messages sent, one deleted

        # Redis loses events the archive holds
        x, y, z = (pkeys.stream(thread[n]) for n in "XYZ")
        assert rclient.xdel(x, *acked["X"][-5:]) == 5
        assert rclient.xdel(y, *acked["Y"][4:7]) == 3
        assert rclient.delete(z) == 1
        verify_before = duologue(env, "verify")

        replays = [duologue(env, "replay", "--thread", thread[n]) for n in names]
        for done in replays:
            assert done.returncode == 0 and "Traceback" not in done.stderr, shown(done)
        problems = acked_problems(db, {thread[n]: acked[n] for n in names})
        assert not problems, ("`duologue replay --thread` deleted archived events Redis had "
                              "lost:\n  " + "\n  ".join(problems))
        assert snapshot(db, everything) == before, \
            "replay changed the archive or the projection of events Redis lost"
        for n in names:
            assert await history_page(gateway, users[n][0], thread[n]) == pages[n], n

        for n in "XYZ":  # before the replays: a loss in Redis, not a damaged projection
            report = _report_of(verify_before.stdout, thread[n])
            assert "not in the log" not in report and "no such event" not in report, \
                shown(verify_before)
        after = duologue(env, "verify")
        assert after.returncode == 0, shown(after)

        for n in names:
            ids, done = await synced_ids(clients[n][0], thread[n])
            assert ids == acked[n], (n, done, [i for i in acked[n] if i not in ids])
            assert done["recovered"] is True, done

        # the conversations go on: new events after what Redis lost, each projected once
        for n in names:
            answer = await clients[n][1].say(users[n][0], f"{n} after the loss")
            assert answer["type"] == "ack", answer
            assert event_key(answer["id"]) > event_key(acked[n][-1]), (answer, acked[n])
            acked[n].append(answer["id"])
    finally:
        for pair in clients.values():
            for client in pair:
                await client.close()
    fleet.burst()
    assert not acked_problems(db, {thread[n]: acked[n] for n in names})
    now = thread_streams(rclient, pkeys)
    assert_projection_of(db, {t: merged_streams(before_streams[t], now.get(t, []))
                              for t in everything})
    assert dead_letters(db) == []
    final = duologue(env, "verify")
    assert final.returncode == 0, shown(final)


def _report_of(stdout: str, thread: str) -> str:
    """The lines ``duologue verify`` printed about one thread."""
    lines = stdout.splitlines()
    out: list[str] = []
    for n, line in enumerate(lines):
        if line.startswith("DIFFERS ") and line.removeprefix("DIFFERS ").strip() == thread:
            for more in lines[n + 1:]:
                if not more.startswith(" "):
                    break
                out.append(more)
    return "\n".join(out)


# --- 3. rebuild against a second rebuild, and against a replay ---------------------------

SYNTHETIC_EVENTS = 300_000
SYNTHETIC_THREADS = 2000
SYNTHETIC_ARCHIVE = """
INSERT INTO events (thread, id, key, kind, payload, ts)
SELECT 'dm:syn' || (g %% %(threads)s) || ':tyn' || (g %% %(threads)s),
       (1700000000000 + g) || '-0', duologue_event_key((1700000000000 + g) || '-0'),
       'MessageSent',
       jsonb_build_object('kind', 'MessageSent', 'sender', 'syn' || (g %% %(threads)s),
                          'body', 'archived message ' || g, 'client_msg_id', 'c' || g),
       duologue_ts(1700000000000 + g)
FROM generate_series(1, %(events)s) AS g
"""
# The fold of a thread of MessageSent events only: one message per event, as sent.
SYNTHETIC_DIFF = """
WITH want AS (SELECT thread, id, payload->>'sender' AS sender, payload->>'body' AS body,
                     duologue_ms(ts) AS sent FROM events WHERE thread LIKE 'dm:syn%%'),
     got AS (SELECT thread, id, sender, body, duologue_ms(sent_at) AS sent FROM messages
             WHERE thread LIKE 'dm:syn%%' AND edited_at IS NULL AND deleted_at IS NULL),
     heads AS (SELECT thread, count(*) AS n, max(key) AS k, min(ts) AS f, max(ts) AS l
               FROM events WHERE thread LIKE 'dm:syn%%' GROUP BY thread)
SELECT (SELECT count(*) FROM (SELECT * FROM want EXCEPT ALL SELECT * FROM got) AS d),
       (SELECT count(*) FROM (SELECT * FROM got EXCEPT ALL SELECT * FROM want) AS d),
       (SELECT count(*) FROM messages WHERE thread LIKE 'dm:syn%%'),
       (SELECT count(*) FROM heads h FULL JOIN (SELECT * FROM threads
                                               WHERE thread LIKE 'dm:syn%%') t USING (thread)
        WHERE h.n IS DISTINCT FROM t.events OR h.k IS DISTINCT FROM t.last_key
           OR h.f IS DISTINCT FROM t.first_at OR h.l IS DISTINCT FROM t.last_at)
"""


def fill_archive(conn: psycopg.Connection) -> None:
    """Archived events of threads Redis no longer holds (retention), enough that a
    rebuild works for a few seconds."""
    conn.execute(SYNTHETIC_ARCHIVE, {"threads": SYNTHETIC_THREADS, "events": SYNTHETIC_EVENTS})


def assert_archive_only_threads_projected(conn: psycopg.Connection) -> None:
    row = conn.execute(SYNTHETIC_DIFF).fetchone()
    assert row == (0, 0, SYNTHETIC_EVENTS, 0), (
        "projection of the archive-only threads != their fold: (archived events without "
        "their message, messages without their event, messages, threads rows that differ) "
        f"= {row}")


def wait_loading(conn: psycopg.Connection, process: subprocess.Popen[str]) -> None:
    """Until the rebuild copies (COPY) the archive's fold into its fresh tables: it has
    read its snapshot of the archive by then."""
    deadline = time.monotonic() + 30
    while not conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND query ILIKE 'COPY %'").fetchone()[0]:
        if process.poll() is not None:
            raise AssertionError(f"the rebuild ended before it loaded:\n{shown(finish(process))}")
        assert time.monotonic() < deadline, "the rebuild never started loading"
        time.sleep(0.01)


def assert_clear_refusal(done: subprocess.CompletedProcess[str], what: str) -> None:
    """Exit non-zero with a readable message: no traceback, a line or three on stderr."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0, shown(done)
    assert "Traceback" not in done.stderr, f"{what} crashed instead of refusing:\n{shown(done)}"
    assert 1 <= len(lines) <= 3, f"{what} did not refuse in a line or three:\n{shown(done)}"


async def _project_some(gateway: Any, fleet: Fleet, seed: int) -> None:
    async with Workload(gateway.ws_url, users=8, threads=10, seed=seed) as work:
        assert await work.run(300) == 300
    fleet.burst()


async def test_a_replay_during_a_rebuild_is_not_undone_by_its_swap(
        gateway, fleet, rclient, db, pkeys):
    """Defect 4 (replay during rebuild). A message's archived copy and its projected row
    are damaged (as by a bad manual fix); the stream still has the message as sent. A
    ``duologue rebuild`` starts (it reads the damaged archive), and while it loads, an
    operator runs ``duologue replay --thread``, which repairs archive and row from the
    stream. When both have ended the repair must be in effect (the rebuild's swap must
    not bring the damage back), unless the replay refused in a readable line while the
    rebuild ran: then a replay after the rebuild repairs it."""
    fill_archive(db)
    await _project_some(gateway, fleet, seed=37)
    alice, bob = uid("a"), uid("b")
    thread = thread_id(alice, bob)
    a = await Client.connect(gateway.ws_url, alice)
    try:
        acks = [await a.say(bob, f"message {n} as sent") for n in range(5)]
    finally:
        await a.close()
    assert all(x["type"] == "ack" for x in acks), acks
    fleet.burst()
    target = acks[2]["id"]
    assert db.execute("UPDATE events SET payload = jsonb_set(payload, '{body}', '\"forged\"') "
                      "WHERE thread = %s AND id = %s", (thread, target)).rowcount == 1
    assert db.execute("UPDATE messages SET body = 'forged' WHERE thread = %s AND id = %s",
                      (thread, target)).rowcount == 1
    env = fleet.env
    rebuild = duologue_start(env, "rebuild")
    try:
        wait_loading(db, rebuild)
        replay = duologue(env, "replay", "--thread", thread)
        rebuilding = rebuild.poll() is None
        rebuilt = finish(rebuild)
    finally:
        if rebuild.poll() is None:
            rebuild.kill()
    both = f"rebuild: {shown(rebuilt)}\nreplay: {shown(replay)}"
    assert rebuilding, f"the rebuild ended before the replay did; nothing was tested:\n{both}"
    assert rebuilt.returncode == 0 and "Traceback" not in rebuilt.stderr, both
    assert "Traceback" not in replay.stderr, both
    if replay.returncode != 0:  # it refused while the rebuild ran: run it again now
        assert_clear_refusal(replay, "the replay during a rebuild")
        again = duologue(env, "replay", "--thread", thread)
        assert again.returncode == 0, shown(again)
    body = db.execute("SELECT body FROM messages WHERE thread = %s AND id = %s",
                      (thread, target)).fetchone()
    archived = db.execute("SELECT payload->>'body' FROM events WHERE thread = %s AND id = %s",
                          (thread, target)).fetchone()
    assert (body, archived) == (("message 2 as sent",), ("message 2 as sent",)), (
        f"after the replay (exit {replay.returncode}) and the rebuild, {target} reads "
        f"{body} in messages and {archived} in the archive: the replay's repair was "
        f"undone by the rebuild's swap\n{both}")
    assert leftovers(db) == []
    assert_archive_only_threads_projected(db)
    assert_projection_of(db, thread_streams(rclient, pkeys))
    verify = duologue(env, "verify")
    assert verify.returncode == 0, shown(verify)
