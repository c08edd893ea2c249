"""``DUOLOGUE_ACK_REPLICAS=N`` (protocol.md section 9): an ack only once N replicas hold
the event (``WAIT``), ``unavailable`` when they do not confirm in time; the event stands
and a resend answers it once. On a Redis Cluster of its own, one replica per master.

Attacks: an ack sent before the replica has the event (a failover right after it would
lose an acked event); a refusal that drops the event, or a resend that appends it twice."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import pytest
import redis

from adapters.record import Keys
from adapters.redis_connect import sync_redis
from duologue.embedded import EmbeddedRedis
from duologue.local_cluster import LocalCluster
from tests.cluster_support import Resends, own_cluster
from tests.support import Client, thread_of, uid

WAIT_MS = "300"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """This module's own cluster: 3 masters, a replica each."""
    yield from own_cluster(tmp_path_factory, replicas=1)


@pytest.fixture(scope="module")
def redis_url(cluster: LocalCluster) -> str:
    """The module's cluster (overrides the run's ``redis_url``)."""
    return cluster.url


def replica_of(redis_url: str, key: str) -> redis.Redis:
    """A client of the replica of the master holding ``key``, reading (READONLY)."""
    cluster = sync_redis(redis_url)
    assert isinstance(cluster, redis.cluster.RedisCluster)
    node = cluster.get_node_from_key(key)
    assert node is not None
    with redis.Redis(host=node.host, port=node.port) as master:
        role = master.execute_command("ROLE")
    cluster.close()
    host, port = role[2][0][0], role[2][0][1]
    replica = redis.Redis(host=host.decode() if isinstance(host, bytes) else host,
                          port=int(port))
    replica.execute_command("READONLY")
    return replica


async def test_an_ack_means_the_replica_holds_the_event(start_gateway, redis_url, prefix):
    gateway = start_gateway(DUOLOGUE_ACK_REPLICAS="1", DUOLOGUE_ACK_WAIT_MS="3000")
    keys = Keys(prefix)
    alice = uid("a")
    a = await Client.connect(gateway.ws_url, alice)
    try:
        for n in range(10):
            bob = uid("b")
            ack = await a.say(bob, f"m{n}")
            assert ack["type"] == "ack", ack
            with replica_of(redis_url, keys.stream(ack["thread"])) as replica:
                held = replica.xrange(keys.stream(ack["thread"]))
            assert [i.decode() for i, _ in held] == [ack["id"]]  # at the ack, not later
        bob = uid("b")  # a replica slower than the primary: the ack waits for it
        with replica_of(redis_url, keys.stream(thread_of(alice, bob))) as replica:
            asleep = threading.Thread(target=_sleep, args=(replica, 0.8))
            asleep.start()
            await asyncio.sleep(0.1)
            started = asyncio.get_running_loop().time()
            ack = await a.say(bob, "waits for the replica")
            waited = asyncio.get_running_loop().time() - started
            await asyncio.to_thread(asleep.join)
        assert ack["type"] == "ack" and waited > 0.5, (ack, waited)
    finally:
        await a.close()


async def test_a_replica_that_does_not_confirm_makes_it_unavailable_and_nothing_is_lost(
        start_gateway, redis_url, prefix):
    gateway = start_gateway(DUOLOGUE_ACK_REPLICAS="1", DUOLOGUE_ACK_WAIT_MS=WAIT_MS)
    keys = Keys(prefix)
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    replica = replica_of(redis_url, keys.stream(thread))
    asleep = threading.Thread(target=_sleep, args=(replica, 2.0))
    a = await Client.connect(gateway.ws_url, alice)
    try:
        assert (await a.say(bob, "before"))["type"] == "ack"
        asleep.start()
        await asyncio.sleep(0.2)
        refused = await a.say(bob, "while the replica sleeps", client_msg_id="held")
        assert refused["type"] == "error" and refused["code"] == "unavailable", refused
        assert "replicas" in refused["message"]
        await asyncio.to_thread(asleep.join)
        for _ in range(50):  # the replica catches up; the resend answers the stored event
            again = await a.say(bob, "while the replica sleeps", client_msg_id="held")
            if again["type"] == "ack":
                break
            await asyncio.sleep(0.1)
        assert again["type"] == "ack" and again["duplicate"] is True, again
        await a.send({"type": "sync", "thread": thread, "after": "0"})
        bodies = [(await a.next("event", thread=thread))["event"]["body"] for _ in range(2)]
        await a.next("synced", thread=thread)
        assert bodies == ["before", "while the replica sleeps"]  # stored once
    finally:
        await a.close()
        replica.close()


def _sleep(replica: redis.Redis, seconds: float) -> None:
    with contextlib.suppress(redis.RedisError):
        replica.execute_command("DEBUG", "SLEEP", seconds)


async def test_a_master_killed_mid_traffic_fails_over_and_no_acked_event_is_lost(
        start_gateway, fleet, cluster, redis_url, prefix, fresh_database):
    """The last test here: it stops a master (its replica takes over, ~5 s), then starts it
    again (it comes back as the new master's replica; until then the promoted master has
    no replica, and acks waiting for one are ``unavailable``). Every acked send survives
    the failover; resent until acked, each is stored once; every receiver (on another
    gateway) gets each live exactly once and in order, whichever node the gateways'
    pub/sub connections were on (the first node, the one ``REDIS_URL`` names, may be the
    one stopped)."""
    one = start_gateway(DUOLOGUE_ACK_REPLICAS="1", DATABASE_URL=fresh_database)
    two = start_gateway(DUOLOGUE_ACK_REPLICAS="1", DATABASE_URL=fresh_database)
    fleet.start(DUOLOGUE_PARTITIONS="64")  # seals the partitions the failover fenced
    keys = Keys(prefix)
    nodes = sync_redis(redis_url)
    assert isinstance(nodes, redis.cluster.RedisCluster)
    alice = uid("a")
    peers, seen = [], set()
    while len(peers) < 3:  # a thread on each master
        peer = uid("p")
        node = nodes.get_node_from_key(keys.stream(thread_of(alice, peer)))
        assert node is not None
        if node.name not in seen:
            seen.add(node.name)
            peers.append(peer)
    victim = nodes.get_node_from_key(keys.stream(thread_of(alice, peers[0])))
    assert victim is not None
    nodes.close()
    a = await Client.connect(one.ws_url, alice)
    receivers = [await Client.connect(two.ws_url, peer) for peer in peers]
    acked: dict[str, list[str]] = {thread_of(alice, p): [] for p in peers}
    resends = Resends()
    try:
        for n in range(30):
            if n == 10:  # SIGTERM: gone (no save); back a while later, as a replica
                server = cluster.server(int(victim.port))
                server.stop()
                healing = asyncio.create_task(_back_after(server, 7.0))
            for peer in peers:
                ack = await resends.until_acked(a, peer, f"m{n}", f"{peer}-{n}")
                acked[thread_of(alice, peer)].append(ack["id"])
        await healing
        for receiver, peer in zip(receivers, peers, strict=True):
            thread = thread_of(alice, peer)
            live = [(await receiver.next("event", thread=thread, timeout=30))["id"]
                    for _ in acked[thread]]
            assert live == acked[thread]
            await receiver.send({"type": "sync", "thread": thread, "after": "0"})
            replayed = [(await receiver.next("event", thread=thread))["id"]
                        for _ in acked[thread]]
            await receiver.next("synced", thread=thread)
            assert replayed == acked[thread]
    finally:
        for client in (a, *receivers):
            await client.close()


async def _back_after(server: EmbeddedRedis, seconds: float) -> None:
    await asyncio.sleep(seconds)
    await asyncio.to_thread(server.start)
