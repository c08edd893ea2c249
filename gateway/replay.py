"""Replays from a thread stream: ``sync`` and the catch-up after a pub/sub gap.

While a thread replays on a connection its live frames are held back; they are
released, deduplicated, when the replay reaches the end of the stream. If Redis
fails part-way the thread stays held and marked stale, and a background catch-up
retries from the last id delivered, so the connection never skips an event.
"""

from __future__ import annotations

import asyncio

import structlog
from redis.exceptions import RedisError

from domain.ids import event_id_of, event_key
from gateway.connection import Connection
from gateway.store import EventStore
from schemas.server import event_frame

log = structlog.get_logger("duologue.replay")
CHUNK = 500


async def replay_thread(store: EventStore, conn: Connection, thread: str, after: str) -> str:
    """Deliver every event with id > ``after``; return the last id delivered (or ``after``)."""
    conn.hold(thread)
    newest = after
    try:
        while conn.close_code is None:
            entries = await store.replay(thread, newest, CHUNK)
            for event_id, payload in entries:
                await conn.push_paced(event_frame(thread, event_id, payload))
                newest = event_id
            if len(entries) < CHUNK:
                break
    except BaseException:
        conn.stale.add(thread)
        conn.last[thread] = event_key(newest)
        raise
    conn.stale.discard(thread)
    conn.release(thread, event_key(newest))
    return newest


async def catch_up(store: EventStore, conn: Connection) -> None:
    """Bring every thread of a paused connection up to the stream (after a pub/sub gap)."""
    async with conn.replaying:
        index = await store.threads(conn.user)
        todo = set(conn.stale)
        todo.update(t for t, last in index if event_key(last) > conn.last.get(t, (0, 0)))
        for thread in sorted(todo):
            after = event_id_of(conn.last.get(thread, (0, 0)))
            await replay_thread(store, conn, thread, after)


async def catch_up_until_done(store: EventStore, conn: Connection) -> None:
    backoff = 0.05
    while conn.close_code is None:
        conn.catch_up_again = False
        try:
            await catch_up(store, conn)
        except (RedisError, OSError) as exc:
            log.info("catch_up_retry", user=conn.user, error=str(exc))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
            continue
        if not conn.catch_up_again:
            conn.resume()
            return


def schedule_catch_up(store: EventStore, conn: Connection) -> None:
    if conn.catching_up is not None and not conn.catching_up.done():
        conn.catch_up_again = True
        return
    conn.catching_up = asyncio.create_task(catch_up_until_done(store, conn))
