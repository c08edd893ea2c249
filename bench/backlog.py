"""Data for the figures, written exactly as the gateway writes it, and the backlog run.

- ``fill``: a projector backlog, N events over T threads;
- ``prefill``: one thread of N messages (sync figures);
- ``project_backlog``: fill, then time ``duologue projector`` applying it.


Every event goes through ``gateway/append.lua`` (EVALSHA, pipelined), with the keys,
arguments and guards ``gateway.store.EventStore.append`` would pass, so the thread
streams, the partition logs, the dedupe keys and the state hashes are the real ones.
The mix is valid: edits and deletes target a live message of their own sender (often
an old one, so the projector has to load it from Postgres), read receipts move
forward to the partner's newest message. The events are generated in rounds, one
event per thread per round, each round one pipeline, so later rounds can name the
ids Redis gave earlier ones and the partition logs interleave many threads.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis
import redis.asyncio as aioredis

from adapters.record import OK, Keys
from adapters.redis_connect import SyncRedis, scan_keys, sync_redis
from bench.harness import (
    DEFAULT_BACKEND,
    REDIS_URL,
    Backend,
    CpuMeter,
    projector,
    scratch,
    utilisation,
)
from bench.options import Options
from domain.commands import DeleteMessage, EditMessage, MarkRead
from gateway.decisions import guard_for
from gateway.store import APPEND_LUA, EventStore, Guard, append_call
from schemas.events import (
    Event,
    MessageDeleted,
    MessageEdited,
    MessageSent,
    ReadUpTo,
)

Call = tuple[list[str], list[Any]]  # KEYS and ARGV of append.lua (gateway.store.append_call)
MIX = (("send", 85), ("edit", 5), ("delete", 5), ("read", 5))
DEDUPE_TTL = 86400


@dataclass
class _Thread:
    thread: str
    users: tuple[str, str]
    live: dict[str, list[str]] = field(default_factory=dict)  # sender -> live message ids
    newest: dict[str, str] = field(default_factory=dict)  # sender -> newest message id
    receipt: dict[str, str] = field(default_factory=dict)  # reader -> up_to


@dataclass
class Expected:
    """What the projection must hold once the whole backlog is applied."""

    events: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    messages: int = 0
    deleted: int = 0
    edited: int = 0  # distinct messages with an edit (a later delete keeps edited_at)
    receipts: int = 0  # (thread, reader) rows
    threads: int = 0
    seconds: float = 0.0
    edited_ids: set[str] = field(default_factory=set, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "kinds": dict(self.kinds), "messages": self.messages,
                "deleted": self.deleted, "edited": self.edited, "receipts": self.receipts,
                "threads": self.threads, "fill_seconds": round(self.seconds, 2)}


def thread_names(threads: int, tag: str = "b") -> list[tuple[str, tuple[str, str]]]:
    out = []
    for n in range(threads):
        a, b = f"{tag}{n:05d}a", f"{tag}{n:05d}b"
        out.append((f"dm:{a}:{b}", (a, b)))
    return out


def _next(rng: random.Random, t: _Thread, n: int) -> tuple[str, str, Event, Guard, str | None]:
    """(kind, author, event, guard, target or up_to) of the thread's next event, with the
    guard the gateway's handlers would pass (``gateway.store.guard_for``); a send when the
    drawn kind has nothing valid to act on."""
    cmid = f"bl-{n}"
    kind = rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
    author = rng.choice(t.users)
    other = t.users[1] if author == t.users[0] else t.users[0]
    if kind in ("edit", "delete") and t.live.get(author):
        target = rng.choice(t.live[author])
        if kind == "edit":
            body = f"edited {target}"
            return (kind, author, MessageEdited(sender=author, target=target, body=body,
                                                client_msg_id=cmid),
                    guard_for(EditMessage(author, t.thread, target, body, cmid)), target)
        return (kind, author, MessageDeleted(sender=author, target=target, client_msg_id=cmid),
                guard_for(DeleteMessage(author, t.thread, target, cmid)), target)
    up_to = t.newest.get(other)
    if kind == "read" and up_to is not None and up_to != t.receipt.get(author):
        return (kind, author, ReadUpTo(reader=author, up_to=up_to),
                guard_for(MarkRead(author, t.thread, up_to, cmid)), up_to)
    body = f"backlog message {n}: the quick brown fox jumps over the lazy dog"
    return "send", author, MessageSent(sender=author, body=body, client_msg_id=cmid), Guard(), None


def fill(prefix: str, events: int, threads: int, partitions: int = 64,
         seed: int = 7, url: str = REDIS_URL) -> Expected:
    """Append ``events`` events round-robin over ``threads`` threads (to the Redis or the
    Redis Cluster at ``url``); returns what the projection must look like afterwards."""
    rng = random.Random(seed)
    keys = Keys(prefix, partitions)
    client = sync_redis(url, socket_timeout=60)
    expected = Expected()
    started = time.perf_counter()
    try:
        state = [_Thread(name, users) for name, users in thread_names(threads)]
        seq = 0
        while expected.events < events:
            planned: list[tuple[_Thread, str, str, str | None, Call]] = []
            for t in state[:events - expected.events]:
                seq += 1
                kind, author, event, guard, ref = _next(rng, t, seq)
                call = append_call(keys, DEDUPE_TTL, t.thread, author, f"bl-{seq}", event, guard)
                planned.append((t, kind, author, ref, call))
            replies = append_all(client, [c for *_, c in planned])
            for (t, kind, author, ref, _), raw_id in zip(planned, replies, strict=True):
                _record(expected, t, kind, author, ref, raw_id.decode())
        expected.threads = min(threads, events)
        expected.edited = len(expected.edited_ids)
        expected.receipts = sum(len(t.receipt) for t in state)
    finally:
        client.close()
    expected.seconds = time.perf_counter() - started
    return expected


def append_all(client: SyncRedis, calls: list[Call]) -> list[bytes]:
    """Run ``gateway/append.lua`` for every (KEYS, ARGV) of ``gateway.store.append_call``
    in one pipeline (on a cluster, each node's share; the script is loaded on every
    primary); the new event ids. A call that met NOSCRIPT (another session
    flushed the script cache) is loaded and run again; any other refusal raises."""
    sha = str(client.script_load(APPEND_LUA))
    replies: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for _ in range(5):
        with client.pipeline(transaction=False) as pipe:
            for i in todo:
                pipe.evalsha(sha, len(calls[i][0]), *calls[i][0], *calls[i][1])
            got = pipe.execute(raise_on_error=False)
        again = []
        for i, reply in zip(todo, got, strict=True):
            if isinstance(reply, redis.exceptions.NoScriptError):
                again.append(i)
            elif isinstance(reply, Exception):
                raise reply
            elif int(reply[0]) != OK:
                raise RuntimeError(f"append.lua answered {reply[0]} for {calls[i][0][1]}")
            else:
                replies[i] = reply[1]
        if not again:
            return replies
        client.script_load(APPEND_LUA)
        todo = again
    raise RuntimeError("append.lua kept disappearing from the script cache")


def _record(expected: Expected, t: _Thread, kind: str, author: str, ref: str | None,
            event_id: str) -> None:
    expected.events += 1
    expected.kinds[kind] += 1
    if kind == "send":
        expected.messages += 1
        t.live.setdefault(author, []).append(event_id)
        t.newest[author] = event_id
    elif kind == "edit":
        expected.edited_ids.add(f"{t.thread}/{ref}")
    elif kind == "delete":
        assert ref is not None
        t.live[author].remove(ref)
        expected.deleted += 1
    elif kind == "read":
        assert ref is not None
        t.receipt[author] = ref


# -- one thread filled through the gateway's own append path (sync figures) ----------
USER, OTHER = "catcher", "filler"
THREAD = f"dm:{USER}:{OTHER}"


async def prefill(prefix: str, events: int, tasks: int = 32, thread: str = THREAD,
                  users: tuple[str, str] = (USER, OTHER)) -> float:
    """Append ``events`` messages to ``thread``; returns seconds taken."""
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = Keys(prefix, 64)
    store = EventStore(client, keys, 86400)
    start = time.perf_counter()

    async def appender(offset: int) -> None:
        for n in range(offset, events, tasks):
            sender = users[n % 2]
            event = MessageSent(sender=sender, body=f"missed message number {n}",
                                client_msg_id=f"fill-{n}")
            await store.append(thread, sender, f"fill-{n}", event)

    try:
        await asyncio.wait_for(asyncio.gather(*(appender(i) for i in range(tasks))), 300)
        length = await client.xlen(keys.stream(thread))
    finally:
        await client.aclose()
    if length != events:
        raise RuntimeError(f"prefill wrote {length} events, wanted {events}")
    return time.perf_counter() - start


# -- the backlog projected and timed (projector figures) ------------------------------
async def _applied(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT coalesce(sum(events), 0)::bigint FROM projector_checkpoints")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _verify(url: str, expected: dict[str, Any]) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM messages), "
            "(SELECT count(deleted_at) FROM messages), (SELECT count(edited_at) FROM messages), "
            "(SELECT count(*) FROM read_receipts), (SELECT count(*) FROM threads), "
            "(SELECT coalesce(sum(events), 0) FROM threads), (SELECT count(*) FROM dead_letters)")
        row = await cur.fetchone()
    assert row is not None
    names = ("events", "messages", "deleted", "edited", "receipts", "threads",
             "thread_events", "dead_letters")
    found = dict(zip(names, (int(v) for v in row), strict=True))
    want = {**{k: expected[k] for k in names if k in expected},
            "thread_events": expected["events"], "dead_letters": 0}
    return {"found": found, "ok": found == want,
            "differs": {k: (found[k], want[k]) for k in want if found[k] != want[k]}}


async def _disk(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int]:
    """(WAL position in bytes, the database's size in bytes)."""
    cur = await conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, "
                             "pg_database_size(current_database())")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _stream_events(prefix: str, url: str) -> int:
    """Events the run's thread streams still hold in Redis (retention at work or not)."""
    client = sync_redis(url)
    try:
        with client.pipeline(transaction=False) as pipe:
            for key in scan_keys(client, Keys(prefix).stream_pattern()):
                pipe.xlen(key)
            return sum(int(n) for n in pipe.execute())
    finally:
        client.close()


async def project_backlog(opts: Options, workers_n: int, env: dict[str, str] | None = None,
                          backend: Backend = DEFAULT_BACKEND) -> dict[str, Any]:
    """Fill a backlog of ``opts.backlog`` events on ``backend``, then time ``duologue
    projector`` (with ``env``) applying it; the projection is checked against what the
    backlog holds."""
    child = None
    async with scratch(opts, "proj", database=True, backend=backend) as world:
        prefix, url, busy_before = world.prefix, world.database_url, world.busy_before
        expected = await asyncio.to_thread(fill, prefix, opts.backlog, opts.backlog_threads,
                                           url=backend.url)
        total = expected.events
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        try:
            disk0 = await _disk(conn)
            child = projector(prefix, url, workers_n, (env or {}) | {"REDIS_URL": backend.url})
            spawned = time.perf_counter()
            await asyncio.to_thread(child.start)
            meter = CpuMeter({"projector": child.pid}, redis_url=backend.url,
                             redis_pids=backend.pids, postgres=True, me="driver")
            cpu0, t_cpu0 = meter.sample(), time.perf_counter()
            first: tuple[float, int] | None = None
            timeline: list[tuple[float, int]] = []
            deadline = spawned + opts.projector_timeout
            done = 0
            while done < total:
                if time.perf_counter() > deadline or not child.alive():
                    raise RuntimeError(f"projector applied {done:,} of {total:,} events "
                                       f"(alive={child.alive()}):\n{child.log_tail()}")
                await asyncio.sleep(0.05)
                done = await _applied(conn)
                now = time.perf_counter()
                timeline.append((round(now - spawned, 3), done))
                if first is None and done > 0:
                    first = (now, done)
            finished = time.perf_counter()
            cpu1 = meter.sample()
            meter.close()
            disk1 = await _disk(conn)
        finally:
            await conn.close()
            if child is not None:
                await asyncio.to_thread(child.stop)
        assert first is not None
        seconds = finished - first[0]
        check = await _verify(url, expected.as_dict())
        in_redis = await asyncio.to_thread(_stream_events, prefix, backend.url)
        return {
            "workers": workers_n, "events": total,
            "rate": (total - first[1]) / seconds if seconds > 0 else math.nan,
            "seconds": round(seconds, 3), "wall_seconds": round(finished - spawned, 3),
            "wall_rate": total / (finished - spawned),
            "first_commit_after": round(first[0] - spawned, 3), "first_seen": first[1],
            "cpu": utilisation(cpu0, cpu1, finished - t_cpu0), "check": check,
            "backlog": expected.as_dict(), "busy_before": busy_before,
            "redis_events": in_redis,
            # per event: WAL written (the whole server's: other sessions add to it) and
            # the database's growth (the events archive, messages, threads, receipts)
            "wal_bytes_per_event": (disk1[0] - disk0[0]) / total,
            "db_bytes_per_event": (disk1[1] - disk0[1]) / total,
            "timeline": timeline[:: max(1, len(timeline) // 40)],
        }
