"""The Postgres projection as the gateway reads it: one pool, two queries.

Every query names its tables (never a cached OID): ``duologue rebuild`` swaps fresh
tables in by renaming them, and Postgres re-resolves names in prepared statements
after such a change. Event ids sort through the numeric ``key`` columns
(``domain.ids.sort_key``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from gateway.errors import UnavailableError
from schemas.http import MessageView, Reaction, ThreadView

log = structlog.get_logger("duologue.history")

POOL_TIMEOUT = 2.0  # seconds to wait for a connection before answering `unavailable`
QUERY_TIMEOUT = 3.0  # seconds for a whole read, the wait for a connection included
PING_TIMEOUT = 1.0
NO_UPPER_BOUND = 10**40  # above every key: keys are numeric(40)


def _ms(column: str) -> str:
    return f"floor(extract(epoch FROM {column}) * 1000)::bigint"


def _reactions(thread: str, key: str) -> str:
    """The reactions of one message as JSON text: one entry per emoji, ordered by the
    earliest ReactionAdded among that emoji's, its users in the order they reacted."""
    return f"""(
    SELECT coalesce(json_agg(json_build_object('emoji', emoji, 'users', users)
                             ORDER BY first), '[]')::text
      FROM (SELECT emoji, json_agg("user" ORDER BY event_key) AS users, min(event_key) AS first
              FROM reactions WHERE thread = {thread} AND message_key = {key}
             GROUP BY emoji) AS g)"""


# The user's threads, newest activity first. Index use: threads_user_a/threads_user_b
# for the threads, read_receipts_pkey for the receipt, messages_pkey (backwards) for the
# newest live message and the unread count. A note-to-self thread comes from the first
# branch only; its "other participant" is the user.
# Tables are named in the order rebuild's swap locks them (threads, messages,
# read_receipts, reactions, blocks): the select list's subqueries come after FROM.
THREADS_SQL = f"""
SELECT t.thread, t.other, t.last_id, m.id, m.sender, m.body, m.sent_ms, m.edited_ms, m.reply_to,
       u.unread, CASE WHEN m.id IS NULL THEN '[]' ELSE {_reactions("t.thread", "m.key")} END,
       (SELECT coalesce(json_agg(by ORDER BY since, by), '[]')::text FROM blocks
         WHERE thread = t.thread)
FROM (
    SELECT * FROM (
        SELECT thread, user_b AS other, last_id, last_key FROM threads WHERE user_a = %(user)s
        UNION ALL
        SELECT thread, user_a, last_id, last_key FROM threads
         WHERE user_b = %(user)s AND user_a <> %(user)s
    ) AS mine
    WHERE %(bkey)s::numeric IS NULL OR last_key < %(bkey)s
       OR (last_key = %(bkey)s AND thread > %(bthread)s)
    ORDER BY last_key DESC, thread
    LIMIT %(limit)s
) AS t
LEFT JOIN LATERAL (
    SELECT id, key, sender, body, {_ms("sent_at")} AS sent_ms,
           {_ms("edited_at")} AS edited_ms, reply_to
      FROM messages
     WHERE thread = t.thread AND deleted_at IS NULL
     ORDER BY key DESC LIMIT 1
) AS m ON true
CROSS JOIN LATERAL (
    SELECT count(*) AS unread FROM messages
     WHERE thread = t.thread AND deleted_at IS NULL AND sender = t.other
       AND key > coalesce((SELECT up_to_key FROM read_receipts
                            WHERE thread = t.thread AND reader = %(user)s), 0)
) AS u
ORDER BY t.last_key DESC, t.thread
"""

# One page of a thread, newest first, and the thread's newest projected event, read
# in one statement so both come from the same snapshot. messages_pkey, backwards.
PAGE_SQL = f"""
SELECT t.last_id, p.id, p.sender, p.body, p.sent_ms, p.edited_ms, p.reply_to, p.deleted,
       CASE WHEN p.id IS NULL THEN '[]' ELSE {_reactions("%(thread)s", "p.key")} END
FROM (VALUES (1)) AS one (x)
LEFT JOIN threads AS t ON t.thread = %(thread)s
LEFT JOIN LATERAL (
    SELECT id, key, sender, CASE WHEN deleted_at IS NULL THEN body END AS body,
           {_ms("sent_at")} AS sent_ms, {_ms("edited_at")} AS edited_ms,
           reply_to, deleted_at IS NOT NULL AS deleted
      FROM messages
     WHERE thread = %(thread)s AND key > %(after)s::numeric AND key < %(before)s::numeric
     ORDER BY key DESC LIMIT %(limit)s
) AS p ON true
ORDER BY p.key DESC
"""


@dataclass(frozen=True, slots=True)
class Page:
    projected_up_to: str  # "0" when nothing of the thread is projected yet
    messages: list[MessageView]  # newest first


class ReadModel:
    def __init__(self, url: str, max_size: int = 10) -> None:
        self.pool = AsyncConnectionPool(
            url, min_size=1, max_size=max_size, open=False, timeout=POOL_TIMEOUT,
            name="gateway-history",
            kwargs={"autocommit": True, "connect_timeout": 2,
                    "application_name": "duologue-gateway",
                    # JIT compiles for estimated-large lists and costs more than it saves
                    "options": "-c jit=off"})

    async def open(self) -> None:
        """Start connecting in the background: the gateway starts even if Postgres is down."""
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close(timeout=2.0)

    async def ping(self) -> None:
        await self.fetch("SELECT 1", {}, PING_TIMEOUT)

    async def threads(self, user: str, limit: int,
                      before: tuple[int, str] | None = None) -> list[ThreadView]:
        """Up to ``limit`` of the user's threads, newest activity first (ties by thread),
        after the (last key, thread) ``before``; the page is cut before the per-thread
        work (last message, unread count, blocks)."""
        bkey, bthread = before if before is not None else (None, "")
        rows = await self.fetch(THREADS_SQL, {"user": user, "limit": limit, "bkey": bkey,
                                              "bthread": bthread})
        return [ThreadView(thread=thread, with_=other, last_id=last_id,
                           last_message=_message(rest[:6], False, rest[7]) if rest[0] else None,
                           unread=rest[6], blocked_by=_users.decode(rest[8]))
                for thread, other, last_id, *rest in rows]

    async def page(self, thread: str, after: int, before: int | None, limit: int) -> Page:
        """Up to ``limit`` messages with ``after`` < key < ``before``, newest first."""
        params = {"thread": thread, "after": after, "limit": limit,
                  "before": NO_UPPER_BOUND if before is None else before}
        rows = await self.fetch(PAGE_SQL, params)
        messages = [_message(row[1:7], row[7], row[8]) for row in rows if row[1] is not None]
        return Page(rows[0][0] or "0", messages)

    async def fetch(
        self, sql: str, params: dict[str, Any], timeout: float = QUERY_TIMEOUT
    ) -> list[tuple[Any, ...]]:
        """Run a read, or raise ``UnavailableError`` when Postgres does not answer in time."""
        try:
            async with asyncio.timeout(timeout):
                try:
                    return await self._run(sql, params)
                except PoolTimeout:
                    raise
                except psycopg.OperationalError:
                    # Postgres dropped connections (restart, failover): replace every broken
                    # idle one, then try once more (reads are safe to repeat)
                    await self.pool.check()
                    return await self._run(sql, params)
        except (psycopg.OperationalError, TimeoutError) as exc:  # PoolTimeout included
            log.warning("history_unavailable", error=str(exc) or type(exc).__name__)
            raise UnavailableError("the message history is unavailable; retry") from None

    async def _run(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()


_reactions_json = msgspec.json.Decoder(list[Reaction])
_users = msgspec.json.Decoder(list[str])


def _message(row: tuple[Any, ...] | list[Any], deleted: bool, reactions: str) -> MessageView:
    event_id, sender, body, sent_at, edited_at, reply_to = row
    return MessageView(id=event_id, sender=sender, body=body, sent_at=sent_at,
                       edited_at=edited_at, deleted=deleted, reply_to=reply_to,
                       reactions=_reactions_json.decode(reactions))
