"""The append batcher on a Redis Cluster (a cluster run: DUOLOGUE_TEST_REDIS=cluster):
each node's calls go in one round trip on that node's own connection, and a call the
node does not take (its slot map entry is stale: MOVED; its connection is gone) is sent
again through the cluster client, in order, and answered as if nothing had happened."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from adapters.redis_connect import AsyncRedis
from gateway.batching import ScriptBatcher
from gateway.pipeline import pipelined_on_node
from tests.conftest import RUN_PREFIX

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.fixture
async def cluster(aredis: AsyncRedis) -> AsyncIterator[RedisCluster]:
    if not isinstance(aredis, RedisCluster):
        pytest.skip("needs a cluster run (DUOLOGUE_TEST_REDIS=cluster)")
    await aredis.initialize()
    yield aredis


def keys_on_every_node(cluster: RedisCluster, per_node: int) -> dict[str, list[str]]:
    """node name -> ``per_node`` keys of this run whose slots that node holds."""
    found: dict[str, list[str]] = {n.name: [] for n in cluster.get_primaries()}
    tag = 0
    while any(len(keys) < per_node for keys in found.values()):
        key = f"{RUN_PREFIX}-cbatch-{{{tag}}}"
        node = cluster.get_node_from_key(key)
        assert node is not None
        if len(found[node.name]) < per_node:
            found[node.name].append(key)
        tag += 1
    return found


class Counting:
    """How many batches went through the cluster client's own pipeline."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.pipelines = 0
        self.original = cluster.pipeline

        def pipeline(*args: object, **kwargs: object) -> object:
            self.pipelines += 1
            return self.original(*args, **kwargs)  # type: ignore[arg-type]

        cluster.pipeline = pipeline  # type: ignore[method-assign]


async def test_every_nodes_calls_answer_in_order_without_the_cluster_pipeline(cluster):
    keys = [k for ks in keys_on_every_node(cluster, 4).values() for k in ks]
    batcher = ScriptBatcher(cluster, INCR)
    await cluster.script_load(INCR)
    counting = Counting(cluster)
    try:
        calls = [(key, batcher([key], [1])) for _ in range(25) for key in keys]
        results = await asyncio.gather(*(call for _, call in calls))
        for key in keys:  # each key's increments answered 1..25 in the order they were made
            assert [r for (k, _), r in zip(calls, results, strict=True) if k == key] == \
                list(range(1, 26))
        assert counting.pipelines == 0  # every call went straight to its node
    finally:
        del cluster.pipeline
        await asyncio.gather(*(cluster.delete(key) for key in keys))


async def test_a_stale_slot_map_entry_is_followed_to_the_owner(cluster):
    """Attacks: a slot moved (a reshard, a failover) while the client's map still names
    the old node: that node answers MOVED and the call must still be made, once."""
    by_node = keys_on_every_node(cluster, 1)
    (owner, [moved]), (other, [stays]) = list(by_node.items())[:2]
    slot = cluster.keyslot(moved)
    wrong: ClusterNode = cluster.get_node(node_name=other)
    cluster.nodes_manager.slots_cache[slot] = [wrong]  # where the map says it is now
    batcher = ScriptBatcher(cluster, INCR)
    await cluster.script_load(INCR)
    counting = Counting(cluster)
    try:
        results = await asyncio.gather(*(batcher([k], [1]) for k in (moved, stays, moved)))
        assert results == [1, 1, 2]
        assert counting.pipelines == 1  # the MOVED calls, again through the cluster client
        assert int(await cluster.get(moved)) == 2 and int(await cluster.get(stays)) == 1
        assert cluster.get_node_from_key(moved).name == owner  # the map is mended
    finally:
        del cluster.pipeline
        await cluster.delete(moved, stays)


async def test_a_node_connection_killed_between_batches_is_replaced(cluster):
    [key] = next(iter(keys_on_every_node(cluster, 1).values()))
    node = cluster.get_node_from_key(key)
    batcher = ScriptBatcher(cluster, INCR)
    await cluster.script_load(INCR)
    try:
        assert await batcher([key], [1]) == 1
        [client_id] = await pipelined_on_node(node, [("CLIENT", "ID")])
        assert len(node._free) == 1  # the one connection both used, idle again
        admin = Redis(host=node.host, port=int(node.port))
        try:
            assert await admin.client_kill_filter(_id=client_id) == 1
        finally:
            await admin.aclose()
        assert await batcher([key], [1]) == 2  # the dead connection's call, sent again
        assert await batcher([key], [1]) == 3
    finally:
        await cluster.delete(key)


async def test_a_call_that_may_have_run_is_not_sent_again_unless_idempotent(cluster):
    """Attacks: the send budget's take sent again after its node's connection was lost
    (a budget charged twice); such a call fails, and only it."""
    [key] = next(iter(keys_on_every_node(cluster, 1).values()))
    node = cluster.get_node_from_key(key)
    batcher = ScriptBatcher(cluster, INCR, idempotent=False)
    await cluster.script_load(INCR)
    try:
        assert await batcher([key], [1]) == 1
        [client_id] = await pipelined_on_node(node, [("CLIENT", "ID")])
        admin = Redis(host=node.host, port=int(node.port))
        try:
            assert await admin.client_kill_filter(_id=client_id) == 1
        finally:
            await admin.aclose()
        with pytest.raises(RedisConnectionError):
            await batcher([key], [1])
        assert await batcher([key], [1]) == 2  # the failed call did not run, nor again
    finally:
        await cluster.delete(key)
