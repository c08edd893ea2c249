"""Running the operators' commands as an operator does, producing events through the real
append script, and the yardstick of every operator test: the domain fold of each thread
stream (the projection must equal it row for row, the archive must hold the stream).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg

from adapters.record import B_EVENT, Keys
from adapters.redis_connect import SyncRedis, async_redis
from domain.commands import DeleteMessage, EditMessage, MarkRead
from domain.ids import thread_id
from domain.state import Message, ThreadState, fold
from gateway.decisions import guard_for
from gateway.store import EventStore
from schemas.events import (
    MessageDeleted,
    MessageEdited,
    MessageSent,
    ReadUpTo,
    decode_event,
    encode_event,
)
from tests.support import ROOT, ProjectorProcess, uid

# --- running the command line ---------------------------------------------------------


def cli_env(env: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without the services' variables, then exactly ``env``."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("REDIS_URL", "DATABASE_URL", "DUOLOGUE_PREFIX", "DUOLOGUE_PARTITIONS")}
    return {**base, "COLUMNS": "200", **env}


def duologue(env: Mapping[str, str], *args: str, timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
    """``python -m duologue.cli ARGS`` with exactly the operator's environment."""
    return subprocess.run([sys.executable, "-m", "duologue.cli", *args], cwd=ROOT,
                          env=cli_env(env), capture_output=True, text=True, timeout=timeout)


def duologue_all(env: Mapping[str, str], *commands: tuple[str, ...], timeout: float = 60
                 ) -> list[subprocess.CompletedProcess[str]]:
    """Several independent commands at once (each as ``duologue`` would run it)."""
    running = [(args, subprocess.Popen(
        [sys.executable, "-m", "duologue.cli", *args], cwd=ROOT, env=cli_env(env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)) for args in commands]
    done = []
    for args, process in running:
        out, err = process.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(args, process.returncode, out, err))
    return done


def differing(done: subprocess.CompletedProcess[str]) -> set[str]:
    """The threads ``duologue verify`` names as differing."""
    return {line.removeprefix("DIFFERS ").strip() for line in done.stdout.splitlines()
            if line.startswith("DIFFERS ")}


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
    client = async_redis(redis_url)
    try:
        seeder = Seeder(EventStore(client, keys, 86400))
        found = await asyncio.gather(*(seeder.conversation(a, b, sends) for a, b in pairs))
    finally:
        await client.aclose()
    return {thread_id(a, b): ids for (a, b), ids in zip(pairs, found, strict=True)}


def pairs_of(count: int) -> list[tuple[str, str]]:
    return [(uid("a"), uid("b")) for _ in range(count)]


# --- the yardstick: the fold of each thread stream ------------------------------------

def stream_of(client: SyncRedis, keys: Keys, thread: str) -> list[tuple[str, bytes]]:
    entries: Any = client.xrange(keys.stream(thread), "-", "+")
    return [(i.decode(), f[B_EVENT]) for i, f in entries]


def fold_of(client: SyncRedis, keys: Keys, thread: str) -> ThreadState:
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


def expected_of(client: SyncRedis, keys: Keys, thread: str) -> dict[str, Any]:
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


def assert_projection_is_fold(conn: psycopg.Connection, client: SyncRedis, keys: Keys,
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


def wait_projected(conn: psycopg.Connection, client: SyncRedis, keys: Keys,
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


def status_json(env: dict[str, str]) -> dict[str, Any]:
    done = duologue(env, "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
