"""One round trip of many commands on one Redis, for the append batches.

redis-py's ``Pipeline`` spends about 14 us of the gateway's CPU per command (a command
stack, per-reply timeouts, its observability hooks); writing the packed commands and
reading each reply under one timeout for the whole batch spends about 6 us
(docs/benchmarks.md, "Issue 13 levers"). Errors are what the pipeline gives with
``raise_on_error=False``: a reply error in its place, a lost connection retried on a
fresh one by the client's ``Retry`` (as redis-py does; every script it runs here is
idempotent: a rerun append answers as the duplicate it is), a timeout raised as redis-py's
``TimeoutError`` with the connection dropped.

On a Redis Cluster, ``pipelined_on_node`` does the same on one node's own connections
(the cluster client's pool for it), packing in C with ``gateway.redis_client``'s
``pack_command``, as its connections do on one Redis; redis-py's ``ClusterPipeline``
around it cost about a fifth of the gateway's CPU per acked send (docs/benchmarks.md,
"The cluster's append path").
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.redis_client import pack_command

Command = tuple[Any, ...]


async def pipelined(redis: Redis, commands: list[Command], waits: float = 0.0) -> list[Any]:
    """Each command's reply (or its ``ResponseError``), in order. ``waits``: seconds a
    command of the batch may block on purpose (``WAIT``), on top of the socket timeout."""
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        return await connection.retry.call_with_retry(  # type: ignore[no-any-return]
            lambda: _exchange(connection, connection.pack_commands(commands), len(commands),
                              waits),
            lambda _: connection.disconnect())
    finally:
        await pool.release(connection)


async def pipelined_on_node(node: ClusterNode, commands: list[Command]) -> list[Any]:
    """``pipelined`` on one node of a Redis Cluster, without retry or redirection: each
    command's reply or error in its place. A ``MOVED``, ``ASK``, ``TRYAGAIN`` or
    ``CLUSTERDOWN`` answer comes back as its ``ResponseError`` (``MovedError``...); when the
    connection is lost or times out, the commands it did not answer get that error (a
    ``ConnectionError`` or ``TimeoutError``: they may or may not have run) and the replies
    read before it are kept. The caller sends again, through the cluster client, what
    belongs elsewhere (and what was not answered, where that is safe)."""
    packed = b"".join([pack_command(*command) for command in commands])
    try:
        connection = node.acquire_connection()
    except RedisError as exc:  # MaxConnectionsError
        return [exc] * len(commands)
    replies: list[Any] = []
    try:
        await _exchange(connection, packed, len(commands), 0.0, replies)
    except (RedisError, OSError) as exc:
        lost = exc if isinstance(exc, RedisError) else ConnectionError(str(exc))
        replies += [lost] * (len(commands) - len(replies))
    finally:
        node.release(connection)
    return replies


async def _exchange(connection: AbstractConnection, packed: Any, count: int, waits: float,
                    replies: list[Any] | None = None) -> list[Any]:
    """Send the packed commands, then read ``count`` replies into ``replies`` (what was
    read stays there when the exchange fails part of the way)."""
    await connection.send_packed_command(packed)
    replies = [] if replies is None else replies
    try:
        limit = connection.socket_timeout
        async with asyncio.timeout(None if limit is None else limit + waits):
            for _ in range(count):
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
