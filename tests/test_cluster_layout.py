"""Redis Cluster layout (issue 11, protocol.md section 9): every key of a thread shares one
hash slot, the partitions spread over every master, and a local cluster
(``duologue/local_cluster.py``) serves what Duologue needs. Runs in every mode: the
cluster tests start a cluster of their own (skipped, saying why, without Redis 7)."""

from __future__ import annotations

import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from adapters.record import ARCHIVED_BELOW, EVENT, LOG_EVENT, LOG_ID, LOG_THREAD, Keys
from adapters.redis_connect import cluster_enabled, scan_keys, sync_redis
from domain.ids import thread_id
from duologue.embedded import EmbeddedRedis
from duologue.local_cluster import (
    LocalCluster,
    LocalClusterError,
    even_slot_ranges,
    require_redis_7,
)
from tests.conftest import RUN_PREFIX
from tests.support import ROOT


def thread_keys(keys: Keys, a: str, b: str) -> list[str]:
    """Every key one append of ``a`` to ``b`` may touch (``adapters/record.py`` Keys)."""
    thread = thread_id(a, b)
    partition = keys.partition(thread)
    return [keys.stream(thread), keys.state(thread), keys.dedupe(thread, a, "c-1"),
            keys.typing(thread, a), keys.log(partition), keys.index(partition, a),
            keys.index(partition, b), keys.epoch(partition), keys.attempts(partition)]


# --- (a) one thread, one slot ------------------------------------------------------------

@pytest.mark.parametrize("partitions", [1, 7, 64, 256])
def test_every_key_of_a_thread_hashes_to_one_slot(partitions):
    keys = Keys(f"{RUN_PREFIX}-layout", partitions)
    for n in range(300):
        a, b = f"alice{n}", f"bob{n * 7919}"
        found = {key: key_slot(key.encode()) for key in thread_keys(keys, a, b)}
        partition = keys.partition(thread_id(a, b))
        assert set(found.values()) == {key_slot(f"{{p{partition}}}".encode())}, found
        assert {Keys.partition_of(key.encode()) for key in found} == {partition}


# --- (b) the default 64 partitions over the masters --------------------------------------

def partitions_per_master(masters: int, partitions: int = 64) -> list[int]:
    """How many of ``partitions`` partition tags each master of an evenly sliced cluster
    owns (no server needed: the slot of the ``{p<n>}`` hash tag)."""
    ranges = even_slot_ranges(masters)
    owner = [next(i for i, (first, last) in enumerate(ranges) if first <= slot <= last)
             for slot in (key_slot(Keys("dl", partitions).log(p).encode())
                          for p in range(partitions))]
    counts = Counter(owner)
    return [counts[i] for i in range(masters)]


def test_the_standard_even_slot_ranges():
    assert even_slot_ranges(1) == [(0, 16383)]
    assert even_slot_ranges(3) == [(0, 5460), (5461, 10922), (10923, 16383)]
    for masters in (2, 3, 5, 6, 12, 100):
        ranges = even_slot_ranges(masters)
        assert ranges[0][0] == 0 and ranges[-1][1] == 16383
        assert all(nxt[0] == cur[1] + 1 for cur, nxt in pairwise(ranges))
        sizes = [last - first + 1 for first, last in ranges]
        assert max(sizes) - min(sizes) <= 1, sizes


@pytest.mark.parametrize("masters", [3, 6, 12])
def test_the_default_partitions_land_on_every_master(masters):
    counts = partitions_per_master(masters)
    average = 64 / masters
    report = (f"64 partitions over {masters} masters (even slot ranges): {counts} per "
              f"master, average {average:.2f}")
    assert sum(counts) == 64, report
    assert min(counts) > 0, "a master holds no partition: " + report
    assert min(counts) >= average / 2, "a master holds under half the average: " + report


# --- (c) a local cluster of 3 masters ----------------------------------------------------

APPEND_LIKE = f"""
local id = redis.call('XADD', KEYS[1], '*', '{EVENT}', ARGV[1])
redis.call('HSET', KEYS[2], '{ARCHIVED_BELOW}', id)
redis.call('SET', KEYS[3], id, 'PX', 60000)
redis.call('XADD', KEYS[5], '*', '{LOG_THREAD}', ARGV[2], '{LOG_ID}', id, '{LOG_EVENT}', ARGV[1])
redis.call('HSET', KEYS[6], ARGV[2], id)
redis.call('HSET', KEYS[7], ARGV[2], id)
return {{id, redis.call('GET', KEYS[8]) or false}}
"""


@pytest.fixture
def redis_7():
    try:
        require_redis_7()
    except LocalClusterError as error:
        pytest.skip(str(error))


def test_a_local_cluster_serves_scripts_and_scans_and_goes_away(tmp_path, redis_7):
    started = time.monotonic()
    cluster = LocalCluster(tmp_path / "cluster").start()
    took = time.monotonic() - started
    single = EmbeddedRedis(tmp_path / "single", persist=False).start()
    servers = list(cluster.servers)
    try:
        assert len(cluster.nodes) == 3 and sorted(cluster.masters()) == sorted(cluster.nodes)
        assert cluster.url == f"redis://127.0.0.1:{cluster.nodes[0][1]}/0"
        assert cluster_enabled(cluster.url) is True
        assert cluster_enabled(single.url) is False
        _check_cluster(cluster)
    finally:
        single.stop()
        started = time.monotonic()
        cluster.stop()
        stopped = time.monotonic() - started
    assert all(server.process is not None and server.process.poll() is not None
               for server in servers)
    assert not any(server.directory.exists() for server in servers)
    assert not (tmp_path / "cluster").exists()
    assert took < 30 and stopped < 10, (took, stopped)


def _check_cluster(cluster: LocalCluster) -> None:
    with redis.Redis(host="127.0.0.1", port=cluster.nodes[0][1]) as node:
        slots = node.execute_command("CLUSTER", "SLOTS")
    assert sorted((int(s[0]), int(s[1])) for s in slots) == even_slot_ranges(3)

    keys = Keys(f"{RUN_PREFIX}-cluster", 64)
    client = sync_redis(cluster.url)
    try:
        named = thread_keys(keys, "alice", "bob")
        thread = thread_id("alice", "bob")
        event_id, epoch = client.eval(APPEND_LIKE, len(named), *named, "payload", thread)
        assert epoch is None
        assert [i for i, _ in client.xrange(keys.stream(thread))] == [event_id]
        assert client.hget(keys.index(keys.partition(thread), "bob"), thread) == event_id
        assert client.xlen(keys.log(keys.partition(thread))) == 1

        other = next(t for t in (thread_id("alice", f"u{n}") for n in range(100))
                     if key_slot(keys.stream(t).encode()) != key_slot(named[0].encode()))
        with pytest.raises((RedisClusterException, redis.ResponseError)):  # CROSSSLOT
            client.eval("return 1", 2, named[0], keys.stream(other))

        for partition in range(64):
            client.set(keys.epoch(partition), "run-1")
        found = set(scan_keys(client, keys.pattern()))
        assert len(found) == 64 + 6  # the epochs; stream, state, dedupe, log, 2 indexes
        per_master = {}
        for _, port in cluster.masters():
            with redis.Redis(host="127.0.0.1", port=port) as master:
                per_master[port] = set(master.scan_iter(match=keys.pattern(), count=1000))
        assert all(per_master.values()), {p: len(k) for p, k in per_master.items()}
        assert set().union(*per_master.values()) == found
    finally:
        client.close()


def test_a_missing_or_old_redis_is_one_clear_line(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "redis-server"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "Redis server v=6.2.6 sha=00000000:0 bits=64"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    with pytest.raises(LocalClusterError) as old:
        LocalCluster(tmp_path / "never").start()
    assert "redis-server >= 7" in str(old.value) and "6.2.6" in str(old.value)
    assert "\n" not in str(old.value)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(LocalClusterError, match="redis-server >= 7 on PATH; there is none"):
        require_redis_7()
    assert not Path(tmp_path / "never").exists()


def test_compose_has_a_redis_cluster_profile():
    """compose.yaml's ``cluster`` profile: six cluster-enabled nodes joined with a replica
    per master, and a gateway and projector pointed at one of them with acks waiting for a
    replica; the default services stay on the one-Redis setup."""
    import yaml

    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    nodes = {n: s for n, s in services.items() if n.startswith("redis-node-")}
    assert len(nodes) == 6
    assert all("--cluster-enabled yes" in " ".join(s["command"]) for s in nodes.values())
    init = " ".join(services["redis-cluster-init"]["command"])
    assert "--cluster-replicas 1" in init and all(f"{n}:6379" in init for n in nodes)
    for name in ("gateway-cluster", "projector-cluster"):
        env = services[name]["environment"]
        assert env["REDIS_URL"].startswith("redis://redis-node-"), name
        assert int(env["DUOLOGUE_ACK_REPLICAS"]) >= 1, name
    for name, service in services.items():
        in_cluster = name in nodes or name.endswith("-cluster") or name == "redis-cluster-init"
        assert (service.get("profiles") == ["cluster"]) == in_cluster, name
