"""Redis clients for one server or a Redis Cluster, told apart by asking the server.

``REDIS_URL`` may name a single Redis or any node of a cluster (protocol.md section 9);
``cluster_enabled`` asks the node (``INFO cluster``) once per URL and process, and the
factories here answer a ``redis.Redis`` or a ``redis.cluster.RedisCluster`` (sync and
asyncio alike). Both speak the same commands for what Duologue does: every multi-key
command and script stays within one hash slot (``adapters/record.py``), pipelines are
never transactions, and SCAN goes through ``scan_keys`` (every primary of a cluster).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeAlias

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

SyncRedis: TypeAlias = "redis.Redis | RedisCluster"
AsyncRedis: TypeAlias = "aioredis.Redis | AsyncRedisCluster"


@functools.cache
def cluster_enabled(url: str) -> bool:
    """Whether ``url`` names a node of a Redis Cluster (asked once per process)."""
    with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5) as probe:
        info = probe.info("cluster")
    return bool(info.get("cluster_enabled"))


def sync_redis(url: str, **options: Any) -> SyncRedis:
    """A synchronous client for ``url``: a cluster client when it names a cluster node."""
    if cluster_enabled(url):
        options.pop("health_check_interval", None)
        return RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)


def async_redis(url: str, **options: Any) -> AsyncRedis:
    """An asyncio client for ``url``: a cluster client when it names a cluster node."""
    if cluster_enabled(url):
        return AsyncRedisCluster.from_url(url, **options)
    return aioredis.Redis.from_url(url, **options)


def scan_keys(client: SyncRedis, match: str, count: int = 1000) -> Iterator[bytes]:
    """Every key matching ``match``, from every primary of a cluster."""
    if isinstance(client, RedisCluster):
        yield from client.scan_iter(match=match, count=count, target_nodes=RedisCluster.PRIMARIES)
    else:
        yield from client.scan_iter(match=match, count=count)


async def ascan_keys(client: AsyncRedis, match: str, count: int = 1000) -> AsyncIterator[bytes]:
    """Every key matching ``match``, from every primary of a cluster."""
    if isinstance(client, AsyncRedisCluster):
        async for key in client.scan_iter(match=match, count=count,
                                          target_nodes=AsyncRedisCluster.PRIMARIES):
            yield key
    else:
        async for key in client.scan_iter(match=match, count=count):
            yield key
