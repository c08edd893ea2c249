"""The projector's bookkeeping in Postgres: checkpoints, dead letters, workers."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import psycopg

from domain.ids import sort_key
from projector.entries import Poison


class CheckpointMovedError(Exception):
    """Another writer advanced this partition's checkpoint: we no longer own it."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.stream = stream


def lock_id(stream: str) -> int:
    """A signed 64-bit advisory-lock key for one partition log."""
    digest = hashlib.blake2b(stream.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def checkpoint(conn: psycopg.Connection, stream: str, partition: int) -> str:
    conn.execute(
        "INSERT INTO projector_checkpoints (stream, partition) VALUES (%s, %s) "
        "ON CONFLICT DO NOTHING", (stream, partition))
    row = conn.execute(
        "SELECT log_id FROM projector_checkpoints WHERE stream = %s", (stream,)).fetchone()
    assert row is not None
    return str(row[0])


def advance(cur: psycopg.Cursor, stream: str, old: str, new: str, count: int) -> None:
    """Compare-and-set: move the checkpoint from ``old`` to ``new`` or raise.

    On a cursor of its own: in pipeline mode the caller's cursor still has writes in
    flight, and a cursor with two statements in flight can hand back the wrong rows.
    """
    with cur.connection.cursor() as own:
        own.execute(
            "UPDATE projector_checkpoints SET log_id = %s, log_key = %s, "
            "events = events + %s, updated_at = now() WHERE stream = %s AND log_id = %s "
            "RETURNING 1", (new, sort_key(new), count, stream, old))
        moved = own.fetchone() is None
    if moved:
        raise CheckpointMovedError(stream)


def bury(cur: psycopg.Cursor, stream: str, partition: int, dead: Sequence[Poison]) -> None:
    if dead:
        cur.executemany(
            "INSERT INTO dead_letters (stream, partition, log_id, thread, event_id, payload, "
            "reason) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(stream, partition, p.log_id, p.thread, p.id, p.payload, p.reason) for p in dead])


def heartbeat(
    conn: psycopg.Connection, name: str, pid: int, host: str, prefix: str, owned: list[int]
) -> int:
    """Record this worker; forget workers whose session is gone; count the live ones."""
    conn.execute(
        "INSERT INTO projector_workers (name, pid, backend_pid, host, prefix, partitions) "
        "VALUES (%s, %s, pg_backend_pid(), %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
        "heartbeat_at = now(), backend_pid = pg_backend_pid(), "
        "partitions = EXCLUDED.partitions", (name, pid, host, prefix, owned))
    conn.execute(
        "DELETE FROM projector_workers w WHERE prefix = %s AND NOT EXISTS "
        "(SELECT 1 FROM pg_stat_activity a WHERE a.pid = w.backend_pid)", (prefix,))
    row = conn.execute(
        "SELECT count(*) FROM projector_workers WHERE prefix = %s", (prefix,)).fetchone()
    return max(1, int(row[0])) if row else 1


def record_partitions(conn: psycopg.Connection, name: str, owned: list[int]) -> None:
    conn.execute("UPDATE projector_workers SET partitions = %s WHERE name = %s", (owned, name))


def retire(conn: psycopg.Connection, name: str) -> None:
    conn.execute("DELETE FROM projector_workers WHERE name = %s", (name,))
