"""The gateway's Redis client: a blocking pool of connections that pack commands in C.

redis-py's asyncio connections pack every command in Python; with hiredis installed
(a declared dependency) ``hiredis.pack_command`` does the same in C. On the append
hot path that was about a fifth of the gateway's CPU (see docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import BlockingConnectionPool, Connection, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from adapters.redis_connect import AsyncRedis, cluster_enabled

CLUSTER_CONNECTIONS = 1024  # per node; a cluster client fails a command past it


def pack_command(*args: Any) -> bytes:
    """One command in the Redis protocol, packed by hiredis in C."""
    head = args[0]
    # multi-word commands ("SCRIPT LOAD", "CLIENT KILL") arrive as one argument
    if isinstance(head, str):
        head = head.encode()
    if isinstance(head, bytes) and b" " in head:
        args = (*head.split(), *args[1:])
    try:
        packed: bytes = hiredis.pack_command(args)
    except TypeError:  # a bytearray (rare): hiredis takes str, int, float, bytes, memoryview
        copied: Any = tuple(bytes(a) if isinstance(a, bytearray) else a for a in args)
        packed = hiredis.pack_command(copied)
    return packed


class PackedConnection(Connection):
    def pack_command(self, *args: Any) -> list[bytes]:
        return [pack_command(*args)]


def connect_redis(url: str, pool_size: int = 64) -> AsyncRedis:
    """A client whose commands wait for a free connection instead of failing.

    redis-py's default pool raises once 100 commands are in flight; under load that
    would turn into spurious ``unavailable`` errors. On a Redis Cluster: a cluster client
    (its connections per node are made as commands need them, up to ``CLUSTER_CONNECTIONS``).
    """
    if cluster_enabled(url):
        return RedisCluster.from_url(
            url, max_connections=CLUSTER_CONNECTIONS, socket_timeout=5,
            socket_connect_timeout=2, retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2))
    extra: dict[str, Any] = {}
    if url.startswith("redis://"):  # TLS and unix sockets keep redis-py's own classes
        extra["connection_class"] = PackedConnection
    pool = BlockingConnectionPool.from_url(
        url, max_connections=pool_size, timeout=5, socket_timeout=5,
        socket_connect_timeout=2, health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2), **extra)
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it
