"""A thread's whole history as the log holds it: the Redis thread stream, and the
archive for anything a retention policy trimmed from the front of the stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import redis

from domain.ids import event_key
from duologue.keys import Keys

PAGE = 10_000


def stream_entries(client: redis.Redis, keys: Keys, thread: str) -> list[tuple[str, str]]:
    """Every (id, payload) of the thread stream, in order."""
    out: list[tuple[str, str]] = []
    start = "-"
    while True:
        page: Any = client.xrange(keys.stream(thread), start, "+", count=PAGE)
        out += [(i.decode(), f.get(b"e", b"").decode()) for i, f in page]
        if len(page) < PAGE:
            return out
        start = "(" + page[-1][0].decode()


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


def log_entries(client: redis.Redis, conn: psycopg.Connection, keys: Keys,
                thread: str) -> list[tuple[str, str]]:
    """The full history: archived events older than the stream's first entry, then the stream."""
    stream = stream_entries(client, keys, thread)
    if not stream:
        return archived_entries(conn, thread)
    older = archived_entries(conn, thread, below=stream[0][0])
    return older + stream


def stream_threads(client: redis.Redis, keys: Keys) -> Iterator[str]:
    """Every thread that has a stream under this prefix."""
    marker = ":t:"
    for key in client.scan_iter(match=f"{keys.prefix}:{{p*}}:t:*", count=1000):
        text = key.decode()
        yield text[text.index(marker) + len(marker):]


def newest(ids: list[str]) -> str:
    return max(ids, key=event_key) if ids else "0"
