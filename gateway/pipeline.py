"""One round trip of many commands on one Redis, for the append batches.

redis-py's ``Pipeline`` spends about 14 us of the gateway's CPU per command (a command
stack, per-reply timeouts, its observability hooks); writing the packed commands and
reading each reply under one timeout for the whole batch spends about 6 us
(docs/benchmarks.md, "Issue 13 levers"). Errors are what the pipeline gives with
``raise_on_error=False``: a reply error in its place, a lost connection retried on a
fresh one by the client's ``Retry`` (as redis-py does; every script it runs here is
idempotent: a rerun append answers as the duplicate it is), a timeout raised as redis-py's
``TimeoutError`` with the connection dropped.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Command = tuple[Any, ...]


async def pipelined(redis: Redis, commands: list[Command], waits: float = 0.0) -> list[Any]:
    """Each command's reply (or its ``ResponseError``), in order. ``waits``: seconds a
    command of the batch may block on purpose (``WAIT``), on top of the socket timeout."""
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        return await connection.retry.call_with_retry(  # type: ignore[no-any-return]
            lambda: _exchange(connection, commands, waits),
            lambda _: connection.disconnect())
    finally:
        await pool.release(connection)


async def _exchange(connection: AbstractConnection, commands: list[Command], waits: float
                    ) -> list[Any]:
    await connection.send_packed_command(connection.pack_commands(commands))
    replies: list[Any] = []
    try:
        limit = connection.socket_timeout
        async with asyncio.timeout(None if limit is None else limit + waits):
            for _ in commands:
                try:
                    replies.append(await connection.read_response(timeout=math.inf))
                except ResponseError as exc:
                    replies.append(exc)
    except TimeoutError as exc:
        await connection.disconnect(nowait=True)
        raise RedisTimeoutError("Timeout reading a batch's replies from Redis") from exc
    except BaseException:
        await connection.disconnect(nowait=True)  # replies left on the socket
        raise
    return replies
