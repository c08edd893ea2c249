"""The contract on a Redis Cluster of its own (protocol.md section 9), whatever Redis the
rest of the run uses: three masters started here from ``redis-server`` 7+ on PATH.

Attacks: fan-out that reaches only the gateways on the node a thread's keys live on;
projector workers that read one node's logs and miss the others'; a node that stops
answering mid-traffic (``DEBUG SLEEP``) costing an acked event, a duplicate, or a gap
after ``sync``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator

import psycopg
import pytest
import redis

from adapters.record import Keys
from adapters.redis_connect import scan_keys, sync_redis
from tests.cluster_support import Resends, own_cluster
from tests.ops_support import duologue
from tests.projection_support import wait_drained
from tests.support import Client, thread_of, uid

PARTITIONS = "64"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own cluster (it overrides the run's ``redis_url``)."""
    for cluster in own_cluster(tmp_path_factory):
        yield cluster.url


@pytest.fixture
def nodes(redis_url: str) -> Iterator[redis.cluster.RedisCluster]:
    client = sync_redis(redis_url)
    assert isinstance(client, redis.cluster.RedisCluster)
    yield client
    client.close()


def node_of(cluster: redis.cluster.RedisCluster, keys: Keys, thread: str) -> str:
    node = cluster.get_node_from_key(keys.stream(thread))
    assert node is not None
    return str(node.name)


def threads_on_distinct_nodes(cluster: redis.cluster.RedisCluster, keys: Keys, user: str,
                              count: int) -> list[str]:
    """Other users whose thread with ``user`` lives on ``count`` distinct nodes."""
    found: dict[str, str] = {}
    while len(found) < count:
        other = uid("o")
        found.setdefault(node_of(cluster, keys, thread_of(user, other)), other)
    return list(found.values())


async def test_fan_out_reaches_every_gateway_whatever_node_holds_the_thread(
        start_gateway, nodes, prefix):
    keys = Keys(prefix, int(PARTITIONS))
    one, two = start_gateway(), start_gateway()
    alice = uid("a")
    others = threads_on_distinct_nodes(nodes, keys, alice, 3)
    a = await Client.connect(one.ws_url, alice)
    peers = [await Client.connect(two.ws_url, o) for o in others]
    try:
        for peer in peers:
            ack = await a.say(peer.user, "across nodes")
            assert ack["type"] == "ack", ack
            assert (await peer.next("event", thread=ack["thread"]))["id"] == ack["id"]
            back = await peer.say(alice, "and back")
            assert await a.next("event", id=back["id"], thread=ack["thread"])
    finally:
        for client in (a, *peers):
            await client.close()
    primaries = {n.name for n in nodes.get_primaries()}
    holding = {nodes.get_node_from_key(k).name  # type: ignore[union-attr]
               for k in scan_keys(nodes, f"{prefix}:*:t:*")}
    assert holding == primaries  # the threads' streams are on all three masters


async def test_two_projector_workers_project_the_logs_of_every_node(
        start_gateway, fleet, nodes, db: psycopg.Connection, prefix):
    keys = Keys(prefix, int(PARTITIONS))
    gateway = start_gateway()
    senders = [await Client.connect(gateway.ws_url, uid("s")) for _ in range(6)]
    sent = 0
    try:
        for sender in senders:
            for other in threads_on_distinct_nodes(nodes, keys, sender.user, 3):
                for n in range(3):
                    assert (await sender.say(other, f"m{n}"))["type"] == "ack"
                    sent += 1
    finally:
        for sender in senders:
            await sender.close()
    workers = [fleet.start(DUOLOGUE_PARTITIONS=PARTITIONS) for _ in range(2)]
    await asyncio.to_thread(wait_drained, nodes, db, keys, 60)
    assert db.execute("SELECT count(*) FROM events").fetchone() == (sent,)
    for _ in range(300):  # the second worker joins and takes its share (rebalancing)
        owners = dict(db.execute(
            "SELECT name, cardinality(partitions) FROM projector_workers"))
        if len(owners) == 2 and min(owners.values()) > 0 and sum(owners.values()) == 64:
            break
        await asyncio.sleep(0.1)
    assert len(owners) == 2 and sum(owners.values()) == int(PARTITIONS), owners
    later = await senders_again(gateway.ws_url, nodes, keys)  # both project from now on
    await asyncio.to_thread(wait_drained, nodes, db, keys, 60)
    assert db.execute("SELECT count(*) FROM events").fetchone() == (sent + later,)
    assert all(w.process is not None and w.process.poll() is None for w in workers)


async def senders_again(url: str, nodes: redis.cluster.RedisCluster, keys: Keys) -> int:
    """One more round of sends on threads of every node; how many were acked."""
    sender = await Client.connect(url, uid("s"))
    try:
        for other in threads_on_distinct_nodes(nodes, keys, sender.user, 3):
            assert (await sender.say(other, "again"))["type"] == "ack"
    finally:
        await sender.close()
    return 3


async def test_a_node_that_stops_answering_costs_unavailable_never_an_event(
        start_gateway, nodes, prefix):
    """``DEBUG SLEEP`` past the gateway's socket timeout (5 s) and the cluster's node timeout
    (2 s here): the node is marked failed and the
    cluster refuses commands until it answers again. Every send is acked or
    ``unavailable``; resent with the same client_msg_id until acked, each is stored once,
    in order, and a ``sync`` from the start has no gap."""
    keys = Keys(prefix, int(PARTITIONS))
    gateway = start_gateway()
    alice = uid("a")
    bob = threads_on_distinct_nodes(nodes, keys, alice, 1)[0]
    thread = thread_of(alice, bob)
    sleeper = nodes.get_node_from_key(keys.stream(thread))
    assert sleeper is not None
    a = await Client.connect(gateway.ws_url, alice)
    resends, acked = Resends(200), []
    total = 40
    asleep = threading.Thread(target=_debug_sleep, args=(sleeper.host, sleeper.port, 6.5))
    try:
        for n in range(total):
            if n == 10:
                asleep.start()
                await asyncio.sleep(0.2)
            acked.append((await resends.until_acked(a, bob, f"m{n}", f"c{n}"))["id"])
        asleep.join()
        assert len(set(acked)) == total
        b = await _connect_when_up(gateway.ws_url, bob)
        try:
            await b.send({"type": "sync", "thread": thread, "after": "0"})
            events = [await b.next("event", thread=thread) for _ in range(total)]
            await b.next("synced", thread=thread)
        finally:
            await b.close()
    finally:
        await a.close()
        if asleep.is_alive():
            asleep.join()
    assert [e["event"]["body"] for e in events] == [f"m{n}" for n in range(total)]
    assert [e["id"] for e in events] == acked
    assert resends.refused > 0  # the node's failure was seen, not slept through


async def _connect_when_up(url: str, user: str, within: float = 20) -> Client:
    """A client reconnecting until the hello comes (1011 while the cluster is down: the
    other nodes take a while to clear the woken node's failure flag)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await Client.connect(url, user)
        except AssertionError:  # closed (1011 unavailable) before the hello
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.3)


def _debug_sleep(host: str, port: int, seconds: float) -> None:
    with contextlib.suppress(redis.RedisError), redis.Redis(host=host, port=port,
                                                            socket_timeout=30) as node:
        node.execute_command("DEBUG", "SLEEP", seconds)


def test_status_names_the_node_of_every_partition(ops_env, nodes):
    done = duologue(ops_env, "status", "--json")
    assert done.returncode == 0, done.stderr
    parts = json.loads(done.stdout)["partitions"]
    primaries = {n.name for n in nodes.get_primaries()}
    assert {p["node"] for p in parts} == primaries
    keys = Keys(ops_env["DUOLOGUE_PREFIX"], len(parts))
    assert all(p["node"] == nodes.get_node_from_key(keys.log(p["partition"])).name
               for p in parts)
