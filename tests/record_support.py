"""Helpers of the system-of-record tests (protocol.md section 7): duologue commands as
subprocesses, acked ids against the archive, the projection as the fold of the archive.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg

from adapters.record import B_EVENT, Keys
from domain.ids import event_key, thread_id
from tests.ops_support import cli_env
from tests.ops_support import duologue as ops_duologue
from tests.projection_support import (
    Expected,
    Stream,
    actual_projection,
    expected_projection,
    projection_diff,
)
from tests.support import ROOT, Client, uid

# --- helpers ----------------------------------------------------------------------------


def duologue(env: Mapping[str, str], *args: str, timeout: float = 90
             ) -> subprocess.CompletedProcess[str]:
    """``duologue ARGS`` as an operator runs it (``ops_support.duologue``, a longer timeout)."""
    return ops_duologue(env, *args, timeout=timeout)


def duologue_start(env: Mapping[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "duologue.cli", *args], cwd=ROOT,
                            env=cli_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


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
                   mine(everything.receipts), mine(everything.events),
                   mine(everything.reactions), mine(everything.blocks))
    problems = projection_diff(want, got)
    assert not problems, "projection != fold of the log:\n  " + "\n  ".join(problems)


async def sync_all(client: Client, thread: str, after: str = "0",
                   timeout: float = 20) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``sync`` and collect its replay: (event frames in order, the synced frame)."""
    client.frames.clear()
    await client.send({"type": "sync", "thread": thread, "after": after})
    synced = await client.next("synced", timeout=timeout, thread=thread)
    return [f for f in client.events(thread)], synced


def merged_history(db, rclient, pkeys, thread: str) -> list[tuple[str, str]]:
    """The thread's events as the archive and the stream hold them together."""
    events = {i: json.dumps(p) for i, p in db.execute(
        "SELECT id, payload FROM events WHERE thread = %s", (thread,))}
    events.update((i.decode(), f[B_EVENT].decode())
                  for i, f in rclient.xrange(pkeys.stream(thread)))
    return sorted(events.items(), key=lambda e: event_key(e[0]))
