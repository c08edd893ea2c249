"""A thread's whole history: the Postgres archive and the Redis thread stream, merged.

The archive is the durable copy; the stream holds the recent events (retention) and
whatever is not archived yet. Where both hold an event id, the stream's copy is the one
clients received and repairs the archive's; an event only the archive holds (Redis
trimmed it, or lost it) stays in the history. Nothing here ever drops an archived event.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg

from adapters.record import ARCHIVED_BELOW, B_EVENT, Keys
from adapters.redis_connect import SyncRedis
from domain.ids import event_key

PAGE = 10_000


def stream_pages(client: SyncRedis, key: str, after: str = "0",
                 size: int = PAGE) -> Iterator[list[tuple[bytes, dict[bytes, bytes]]]]:
    """The entries of a stream above ``after``, a non-empty page at a time, in order."""
    start = "-" if after == "0" else f"({after}"
    while True:
        page: Any = client.xrange(key, start, "+", count=size)
        if page:
            yield page
        if len(page) < size:
            return
        start = "(" + page[-1][0].decode()


def stream_entries(client: SyncRedis, keys: Keys, thread: str) -> list[tuple[str, str]]:
    """Every (id, payload) of the thread stream, in order."""
    return [(i.decode(), f.get(B_EVENT, b"").decode())
            for page in stream_pages(client, keys.stream(thread)) for i, f in page]


def archived_entries(conn: psycopg.Connection, thread: str,
                     below: str | None = None) -> list[tuple[str, str]]:
    """(id, payload) of the thread's archived events, optionally only those below an id."""
    query = "SELECT id, payload::text FROM events WHERE thread = %s"
    params: list[object] = [thread]
    if below is not None:
        query += " AND key < duologue_event_key(%s)"
        params.append(below)
    rows = conn.execute(query + " ORDER BY key", params).fetchall()
    return [(str(i), str(p)) for i, p in rows]


def merged(archive: list[tuple[str, str]],
           stream: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every event of either, in id order; the stream's payload where both have an id."""
    events = dict(archive)
    events.update(stream)
    return sorted(events.items(), key=lambda item: event_key(item[0]))


def log_entries(client: SyncRedis, conn: psycopg.Connection, keys: Keys,
                thread: str) -> list[tuple[str, str]]:
    """The full history of a thread: archive and stream merged."""
    return merged(archived_entries(conn, thread), stream_entries(client, keys, thread))


def lost_from_stream(conn: psycopg.Connection, client: SyncRedis, keys: Keys,
                     thread: str) -> list[str]:
    """Archived event ids the stream lacks at or above its ``lo`` (where a replay reads only
    the stream): Redis lost them, or they were deleted by hand. In id order."""
    stream = stream_entries(client, keys, thread)
    if not stream:
        return []  # no stream: every replay of the thread reads the archive
    lo: Any = client.hget(keys.state(thread), ARCHIVED_BELOW)
    floor = event_key(lo.decode()) if lo else (0, 0)
    have = {i for i, _ in stream}
    return [i for i, _ in archived_entries(conn, thread)
            if event_key(i) >= floor and i not in have]


def stream_threads(client: SyncRedis, keys: Keys) -> Iterator[str]:
    """Every thread that has a stream under this prefix."""
    for key in client.scan_iter(match=keys.stream_pattern(), count=1000):
        yield keys.thread_of_stream(key.decode())
