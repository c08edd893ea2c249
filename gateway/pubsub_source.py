"""Where the hub's one pub/sub connection goes.

On one Redis, to that Redis. On a Redis Cluster, to any node: the scripts ``PUBLISH``
(not ``SPUBLISH``, docs/cluster.md says why) and a cluster hands every published message
to the subscribers of every node. When that node fails, the next subscription goes to
another node the cluster client knows of; the hub resubscribes there, and every
resubscription is a gap its connections catch up on.
"""

from __future__ import annotations

import contextlib

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from adapters.redis_connect import AsyncRedis


async def as_is(message: object) -> object:
    """Each pub/sub message as it came (RESP3 delivers them as pushes): redis-py's own
    handler looks up a logger and logs it at debug level, a few microseconds a message."""
    return message


class PubSubSource:
    def __init__(self, redis: AsyncRedis) -> None:
        self.redis = redis
        self.turn = 0
        self.client: aioredis.Redis | None = None  # a cluster node's, for the pub/sub

    @property
    def moves(self) -> bool:
        """Whether a failed connection is replaced by one to another node."""
        return isinstance(self.redis, RedisCluster)

    async def open(self) -> PubSub:
        if not isinstance(self.redis, RedisCluster):
            return self.redis.pubsub(push_handler_func=as_is)
        await self.close()
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            await self.redis.initialize()  # no-op once it knows the nodes
        # not reachable yet: the node the URL names
        nodes = self.redis.get_nodes() or list(self.redis.nodes_manager.startup_nodes.values())
        node = nodes[self.turn % len(nodes)]
        self.turn += 1
        kwargs = self.redis.get_connection_kwargs()
        self.client = aioredis.Redis(
            host=node.host, port=int(node.port),
            socket_connect_timeout=kwargs.get("socket_connect_timeout"),
            # bounds the handshake of a (re)connect to a node gone silent; the hub's
            # reads block without it (``get_message(timeout=None)``)
            socket_timeout=kwargs.get("socket_timeout") or 5,
            username=kwargs.get("username"), password=kwargs.get("password"))
        return self.client.pubsub(push_handler_func=as_is)

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(RedisError, RedisClusterException, OSError):
                await self.client.aclose()
            self.client = None
