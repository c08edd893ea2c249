"""Replays of a thread: ``sync`` and the catch-up after a pub/sub gap.

A replay pages through the Postgres archive for what the thread stream no longer holds
(below its ``lo``), then through the stream, each page of the stream read atomically
with its ``lo``, so every event is delivered once, in order, whichever tier holds it.
While a thread replays on a connection its live frames are held back; they are
released, deduplicated, when the replay reaches the end of the stream. If Redis or
Postgres fails part-way the thread stays held and marked stale, and a background
catch-up retries from the last id delivered, so the connection never skips an event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from redis.exceptions import RedisClusterException, RedisError

from adapters.record import ALL_ARCHIVED
from domain.ids import event_key
from gateway.connection import Connection
from gateway.errors import UnavailableError
from gateway.store import EventStore
from schemas.server import event_frame

log = structlog.get_logger("duologue.replay")
CHUNK = 500


async def next_entries(store: EventStore, user: str, thread: str,
                       after: str) -> tuple[list[tuple[str, str]], bool]:
    """The next events with id > ``after`` from whichever tier holds them, and whether
    they are the last ones (as of this read)."""
    page = await store.page(thread, user, after, CHUNK)
    lo = page.lo
    if lo is not None and (lo == ALL_ARCHIVED or event_key(after) < event_key(lo)):
        below = None if lo == ALL_ARCHIVED else lo
        archived = await store.archive.events(thread, after, below, CHUNK)
        if archived or lo == ALL_ARCHIVED:
            return archived, len(archived) < CHUNK and lo == ALL_ARCHIVED
        # nothing archived between ``after`` and ``lo``: the stream's page follows on
    return page.entries, len(page.entries) < CHUNK


async def replay_thread(store: EventStore, conn: Connection, thread: str, after: str,
                        ended: Callable[[str], None] | None = None) -> str:
    """Deliver every event with id > ``after``; return the last id delivered (or ``after``).

    ``ended`` is called with that id before the live frames held meanwhile are released
    (``sync`` queues its ``synced`` there: the frames it held come after it)."""
    conn.delivery.begin_replay(thread)
    newest = after
    try:
        while conn.close_code is None:
            entries, last = await next_entries(store, conn.user, thread, newest)
            for event_id, payload in entries:
                await conn.push_paced(event_frame(thread, event_id, payload))
                newest = event_id
            if last:
                break
    except BaseException:
        conn.delivery.fail_replay(thread, newest)
        raise
    if ended is not None:
        ended(newest)
    conn.push_all(conn.delivery.end_replay(thread, newest))
    return newest


def schedule_catch_up(store: EventStore, conn: Connection) -> None:
    """Start the catch-up the connection's ``Delivery`` asked for: replay every thread
    that is behind its stream (after a pub/sub gap, or a failed ``sync``), in rounds
    until no new gap came meanwhile, retrying while Redis or Postgres is away."""
    conn.catching_up = asyncio.create_task(_catch_up(store, conn))


async def _catch_up(store: EventStore, conn: Connection) -> None:
    backoff = 0.05
    try:
        while conn.close_code is None:
            conn.delivery.begin_round()
            try:
                await _replay_behind(store, conn)
            except (RedisError, RedisClusterException, OSError, UnavailableError) as exc:
                log.info("catch_up_retry", user=conn.user, error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            released = conn.delivery.end_round()
            if released is not None:
                conn.push_all(released)
                return
    finally:
        conn.delivery.stop_catch_up()


async def _replay_behind(store: EventStore, conn: Connection) -> None:
    async with conn.replaying:
        index = await store.threads(conn.user)
        for thread, after in conn.delivery.behind(index):
            await replay_thread(store, conn, thread, after)
