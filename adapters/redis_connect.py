"""Redis clients for one server or a Redis Cluster, told apart by asking the server.

``REDIS_URL`` may name a single Redis or any node of a cluster (protocol.md section 9);
``cluster_enabled`` asks the node (``INFO cluster``) once per URL and process, and the
factories here answer a ``redis.Redis`` or a ``redis.cluster.RedisCluster`` (sync and
asyncio alike). Both speak the same commands for what Duologue does: every multi-key
command and script stays within one hash slot (``adapters/record.py``), pipelines are
never transactions, and SCAN covers every primary of a cluster (``scan_keys``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeAlias

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline as AsyncPipeline
from redis.asyncio.cluster import ClusterPipeline as AsyncClusterPipeline
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

SyncRedis: TypeAlias = "redis.Redis | RedisCluster"
AsyncRedis: TypeAlias = "aioredis.Redis | AsyncRedisCluster"
AsyncTarget: TypeAlias = "AsyncRedis | AsyncPipeline | AsyncClusterPipeline"  # runs a Script


_KNOWN: dict[str, bool] = {}


def cluster_enabled(url: str) -> bool:
    """Whether ``url`` names a node of a Redis Cluster (asked once per process). A Redis
    that does not answer yet counts as one server, and is asked again next time: a gateway
    starts (not ready) while Redis is down, as on one Redis."""
    if url not in _KNOWN:
        try:
            with redis.Redis.from_url(url, socket_connect_timeout=2,
                                      socket_timeout=5) as probe:
                info = probe.info("cluster")
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False  # asked again next time; what the caller then meets, it reports
        _KNOWN[url] = bool(info.get("cluster_enabled"))
    return _KNOWN[url]


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


def run_ids(client: SyncRedis) -> Callable[[str], str]:
    """The run id of the Redis server holding each key (one server: its own; a cluster:
    the primary that owns the key's slot, as asked now). A partition is sealed for the
    run of the server holding it (``gateway/fence.lua``)."""
    if not isinstance(client, RedisCluster):
        run_id = str(client.info("server")["run_id"])
        return lambda key: run_id
    infos: Any = client.info("server", target_nodes=RedisCluster.PRIMARIES)
    return _by_node(client, infos)


async def arun_ids(client: AsyncRedis) -> Callable[[str], str]:
    """``run_ids`` for an asyncio client."""
    if not isinstance(client, AsyncRedisCluster):
        info: Any = await client.info("server")
        run_id = str(info["run_id"])
        return lambda key: run_id
    infos = await client.info("server", target_nodes=AsyncRedisCluster.PRIMARIES)
    return _by_node(client, infos)


def _by_node(client: RedisCluster | AsyncRedisCluster,
             infos: dict[str, Any]) -> Callable[[str], str]:
    if "run_id" in infos:  # a cluster of one primary answers for it alone
        only = str(infos["run_id"])
        return lambda key: only
    by_node = {name: str(info.get("run_id", "")) for name, info in infos.items()}

    def run_of(key: str) -> str:
        node = client.get_node_from_key(key)
        return by_node.get(node.name, "") if node is not None else ""
    return run_of


def scripted(client: SyncRedis, text: str) -> Any:
    """``client.register_script(text)``, ready to run in a pipeline: a cluster pipeline
    cannot load a script its node lacks (NOSCRIPT), so on a cluster it is loaded on every
    primary first (one SCRIPT LOAD each: a failover's new primary may not have it)."""
    if isinstance(client, RedisCluster):
        client.script_load(text)
    return client.register_script(text)


async def apreload(client: AsyncRedis, text: str) -> None:
    """Before an asyncio pipeline runs a script: ``scripted``'s load, on a cluster."""
    if isinstance(client, AsyncRedisCluster):
        await client.script_load(text)
