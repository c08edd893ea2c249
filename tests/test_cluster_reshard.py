"""A live slot migration under traffic (protocol.md section 9): ``redis-cli --cluster
reshard`` moves every slot of one master to another while senders on threads of every
node keep sending and a projector keeps projecting. Sends are acked or ``unavailable``
(resent with the same client_msg_id until acked); afterwards each thread holds every
acked send once, in order, a ``sync`` from the start has no gap, and the projection
catches up with all of them.

Attacks: a multi-key script half on the old node and half on the new one; a partition
whose epoch moved to a node with another run id staying fenced for good; the projector
reading a log from a node that no longer owns it."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator

import psycopg
import pytest
import redis

from adapters.record import Keys
from adapters.redis_connect import sync_redis
from tests.cluster_support import Resends, own_cluster
from tests.projection_support import wait_drained
from tests.support import Client, thread_of, uid

SENDERS = 6


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own cluster (the reshard changes it)."""
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not on PATH")
    for cluster in own_cluster(tmp_path_factory):
        yield cluster.url


def _reshard(url: str) -> str:
    """Move every slot of the first master to the second; redis-cli's output."""
    client = sync_redis(url)
    assert isinstance(client, redis.cluster.RedisCluster)
    nodes = {n["id"]: n for n in _masters(client)}
    client.close()
    (source, s), (target, _) = sorted(nodes.items(), key=lambda kv: kv[1]["port"])[:2]
    done = subprocess.run(
        ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{s['port']}",
         "--cluster-from", source, "--cluster-to", target,
         "--cluster-slots", str(s["slots"]), "--cluster-yes", "--cluster-pipeline", "100"],
        capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def _masters(client: redis.cluster.RedisCluster) -> list[dict[str, object]]:
    """id, port and slot count of every master (redis-py's parsed CLUSTER NODES)."""
    found = []
    for address, node in client.cluster_nodes().items():
        if "master" not in node["flags"]:
            continue
        slots = sum(int(high) - int(low) + 1 for low, high in node["slots"])
        found.append({"id": node["node_id"], "port": int(address.rsplit(":", 1)[1]),
                      "slots": slots})
    return found


async def test_a_live_slot_migration_loses_nothing(start_gateway, fleet, redis_url, prefix,
                                                  db: psycopg.Connection, fresh_database):
    gateway = start_gateway(DATABASE_URL=fresh_database)  # a sync reads what retention moved
    projector = fleet.start(DUOLOGUE_PARTITIONS="64")
    keys = Keys(prefix, 64)
    senders = [await Client.connect(gateway.ws_url, uid("s")) for _ in range(SENDERS)]
    peers = [uid("p") for _ in senders]
    acked: dict[str, list[str]] = {}
    resends = Resends(pause=0.05)
    moving = asyncio.create_task(asyncio.to_thread(_reshard, redis_url))

    async def send(client: Client, peer: str) -> None:
        ids = acked.setdefault(thread_of(client.user, peer), [])
        n = 0
        while not moving.done() or n < 20:
            ids.append((await resends.until_acked(client, peer, f"m{n}", f"c{n}"))["id"])
            n += 1

    try:
        await asyncio.gather(*(send(c, p) for c, p in zip(senders, peers, strict=True)))
        moved = await moving
        assert "Moving slot" in moved  # the migration ran while the senders sent
        for client, peer in zip(senders, peers, strict=True):
            thread = thread_of(client.user, peer)
            live = [(await client.next("event", thread=thread))["id"]
                    for _ in acked[thread]]  # the sender's own devices get each live too
            assert live == acked[thread]
            await asyncio.sleep(0.2)
            assert not [f for f in client.frames if f.get("type") == "event"]  # no repeats
            await client.send({"type": "sync", "thread": thread, "after": "0"})
            got = [(await client.next("event", thread=thread))["id"]
                   for _ in acked[thread]]
            await client.next("synced", thread=thread)
            assert got == acked[thread]  # every ack once, in order, no gap
    finally:
        for client in senders:
            await client.close()
    client = sync_redis(redis_url)
    try:
        await asyncio.to_thread(wait_drained, client, db, keys, 60)
    finally:
        client.close()
    total = sum(len(ids) for ids in acked.values())
    assert db.execute("SELECT count(*) FROM events").fetchone() == (total,)
    assert projector.process is not None and projector.process.poll() is None
