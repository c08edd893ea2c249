"""The webhook outbox, written by the live projector (protocol.md section 6).

``Outbox.enqueue`` runs inside the batch's transaction (``projector.worker``), on the
entries the batch applied for the first time: a notification per ``MessageSent`` whose
recipient (the other participant) is offline, none for a note-to-self thread, all of the
batch's in one row (a bundle, which the senders split into a row per notification).
Committed with the checkpoint, a notification exists exactly once per event whatever
crashes when; ``duologue replay``
and ``rebuild`` never call it. ``pg_notify`` in the same transaction wakes the senders
(``projector.webhook_sender``) at commit.

Presence: one pipelined Redis read per read of the logs (``TIME`` and the distinct
recipients' presence hashes, ``adapters.presence``), on a client of the outbox's own with
a short timeout. ``Outbox.prefetch`` makes it in the worker's read-ahead thread, while
the batch before commits, so it is off the projection's path; the batch's transaction
reads presence itself only for chunks without it (the first read, a split batch). "When
the event is projected" is thus when its batch was read, a few milliseconds before its
commit. If that read fails, every recipient counts as offline: a notification too many is
better than one lost (receivers deduplicate by ``id``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import hiredis
import psycopg
import redis
import structlog
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from adapters import presence
from adapters.redis_connect import SyncRedis, sync_redis
from adapters.settings import Settings
from domain.ids import check_participant, ms_of
from projector.entries import Entry
from projector.reading import Chunk
from schemas.events import MessageSent
from schemas.webhook import (
    Notification,
    delivery_id,
    encode_notification,
    encode_notifications,
)

log = structlog.get_logger("duologue.webhook")

CHANNEL = "duologue_webhook"  # LISTEN/NOTIFY channel of the senders
PRESENCE_TIMEOUT_S = 1.0  # a presence read slower than this counts as failed (offline)

# The batch's notifications are one row, a bundle (migration 0006): its body is their JSON
# array, encoded once by msgspec; the senders split it into a row per notification
# (``projector.webhook_sender``), whose ``n::text`` is the very body
# ``schemas.webhook.encode_notification`` makes (the bytes signed and POSTed). Measured per
# batch of 850 here: 1.6 ms, against 4.5 ms for a row per notification (and 10 ms with
# thread, event id and recipient as columns and a unique index on the id).
_INSERT = "INSERT INTO webhook_outbox (id, body, deliveries) VALUES (%s, %s, %s)"


def notification(entry: Entry, recipient: str) -> Notification:
    event = entry.event
    assert isinstance(event, MessageSent)
    return Notification(id=delivery_id(entry.thread, entry.id), thread=entry.thread,
                        event_id=entry.id, recipient=recipient, sender=event.sender,
                        body=event.body, reply_to=event.reply_to, ts=ms_of(entry.id))


def candidates(entries: Sequence[Entry]) -> list[tuple[Entry, str]]:
    """(entry, recipient) of every MessageSent to someone other than its sender."""
    out = []
    for entry in entries:
        event = entry.event
        if isinstance(event, MessageSent):
            recipient = check_participant(entry.thread, event.sender)
            if recipient != event.sender:
                out.append((entry, recipient))
    return out


class Outbox:
    """Enqueues notifications in the live projector's batch transactions (lanes share it)."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = bool(settings.webhook_url)
        self.settings = settings
        self._client: SyncRedis | None = None
        self._lock = threading.Lock()

    def prefetch(self, chunks: Sequence[Chunk]) -> None:
        """Read the presence of every recipient of ``chunks`` now (see the module doc)."""
        if not self.enabled or not chunks:
            return
        found = candidates([e for c in chunks for e in c.parsed if isinstance(e, Entry)])
        online = frozenset(self.online({r for _, r in found}) if found else ())
        for chunk in chunks:
            chunk.online = online

    def enqueue(self, cur: psycopg.Cursor, entries: Sequence[Entry],
                online: frozenset[str] | None = None) -> int:
        """Insert the batch's notifications; return how many rows were written. ``online``:
        the recipients online, if prefetched for every entry (else read here)."""
        if not self.enabled:
            return 0
        found = candidates(entries)
        if not found:
            return 0
        if online is None:
            online = frozenset(self.online({r for _, r in found}))
        rows = [notification(e, r) for e, r in found if r not in online]
        if len(rows) == 1:
            cur.execute(_INSERT, (rows[0].id, encode_notification(rows[0]).decode(), 1))
        elif rows:
            cur.execute(_INSERT, (rows[0].id, encode_notifications(rows).decode(), len(rows)))
        if rows:
            cur.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
        return len(rows)

    def online(self, users: set[str]) -> set[str]:
        """The users of ``users`` online now (Redis ``TIME``); none if Redis cannot say."""
        ordered = sorted(users)
        try:
            replies = self._read([("TIME",)] + [
                ("HGETALL", presence.key(self.settings.prefix, user)) for user in ordered])
        except (redis.RedisError, RedisClusterException) as exc:
            log.warning("webhook_presence_unknown", users=len(ordered),
                        error=f"{type(exc).__name__}: {exc}",
                        decision="every recipient of this batch counts as offline")
            return set()
        seconds, micros = replies[0]
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return {user for user, flat in zip(ordered, replies[1:], strict=True)
                if flat and presence.status(_pairs(flat), now_ms,
                                            self.settings.presence_lease_ms)[0]}

    def _read(self, commands: list[Any]) -> list[Any]:
        """One pipelined round trip, packed by hiredis in C and read back raw: a batch reads
        up to a thousand presence hashes, and redis-py's pipeline objects cost 6 ms per
        thousand commands here against 2 ms this way. On a cluster, a cluster pipeline: the
        presence hashes are in their users' slots, on every node."""
        client = self.client()
        if isinstance(client, RedisCluster):
            time_now: Any = client.time()
            with client.pipeline(transaction=False) as pipe:  # type: ignore[no-untyped-call]
                for command in commands[1:]:
                    pipe.execute_command(*command)
                return [list(time_now), *pipe.execute()]
        pool = client.connection_pool
        conn = pool.get_connection()
        try:
            packed = [hiredis.pack_command(c) for c in commands]
            conn.send_packed_command(packed)  # type: ignore[no-untyped-call]
            return [conn.read_response() for _ in commands]
        except BaseException:
            conn.disconnect()  # type: ignore[no-untyped-call]  # replies may be left unread
            raise
        finally:
            pool.release(conn)

    def client(self) -> SyncRedis:
        with self._lock:
            if self._client is None:
                self._client = sync_redis(
                    self.settings.redis_url, socket_timeout=PRESENCE_TIMEOUT_S,
                    socket_connect_timeout=PRESENCE_TIMEOUT_S)
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _pairs(reply: Any) -> dict[bytes, bytes]:
    """A raw HGETALL reply as a dict: a map on RESP3, a flat list on RESP2."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def counts(conn: psycopg.Connection) -> dict[str, int]:
    """``duologue status``: deliveries still to make (or being retried), and dead ones."""
    row = conn.execute(
        "SELECT coalesce(sum(deliveries) FILTER (WHERE dead_at IS NULL), 0), count(*) "
        "FILTER (WHERE dead_at IS NOT NULL) FROM webhook_outbox").fetchone()
    assert row is not None
    return {"pending": int(row[0]), "dead": int(row[1])}
