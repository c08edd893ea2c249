"""``duologue status``: where every partition's projection stands.

Per partition log: the checkpoint, lag in events and seconds, pending entries,
dead letters and the worker that owns it; the live workers; totals of the
log (thread streams) beside the archive and the projection; and the webhook outbox
(deliveries pending and dead).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from redis.cluster import RedisCluster

from adapters.record import Keys
from adapters.redis_connect import SyncRedis
from domain.ids import ms_of
from projector.thread_log import stream_pages, stream_threads
from projector.webhook_outbox import counts as webhook_counts


@dataclass
class PartitionStatus:
    partition: int
    stream: str
    checkpoint: str
    projected: int
    lag_events: int
    lag_seconds: float
    pending: int  # entries after the checkpoint, still to commit (== lag_events since
    dead_letters: int  # reads start at the checkpoint: no pending list is held elsewhere
    owner: str | None
    redis_events: int = 0  # events the partition's thread streams hold (the hot tier)
    redis_bytes: int = 0  # memory of every key of the partition (MEMORY USAGE)
    node: str = ""  # host:port of the Redis holding the partition (on a cluster: its slot's)


@dataclass
class Status:
    partitions: list[PartitionStatus] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    # offline notifications (docs/webhooks.md): "pending" still to deliver or being retried,
    # "dead" retried for DUOLOGUE_WEBHOOK_RETRY_FOR without a 2xx
    webhooks: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def status(conn: psycopg.Connection, client: SyncRedis, keys: Keys) -> Status:
    result = Status()
    checkpoints = {s: (c, n) for s, c, n in conn.execute(
        "SELECT stream, log_id, events FROM projector_checkpoints")}
    dead: dict[str, int] = dict(conn.execute(
        "SELECT stream, count(*) FROM dead_letters GROUP BY stream"))
    owners: dict[int, str] = {}
    for name, pid, host, age, parts, alive in conn.execute(
            "SELECT name, pid, host, extract(epoch FROM now() - heartbeat_at)::float8, "
            "partitions, EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = w.backend_pid) "
            "FROM projector_workers w WHERE prefix = %s ORDER BY name", (keys.prefix,)):
        result.workers.append({"name": name, "pid": pid, "host": host, "alive": alive,
                               "heartbeat_age_s": round(age, 1), "partitions": len(parts)})
        owners.update({p: name for p in parts} if alive else {})
    now_ms = int(time.time() * 1000)
    for partition in range(keys.partitions):
        stream = keys.log(partition)
        checkpoint, projected = checkpoints.get(stream, ("0", 0))
        lag, oldest = _lag(client, stream, checkpoint)
        result.partitions.append(PartitionStatus(
            partition, stream, checkpoint, int(projected), lag,
            round(max(0, now_ms - oldest) / 1000, 3) if oldest else 0.0, lag,
            int(dead.get(stream, 0)), owners.get(partition)))
    node_of = _nodes(client)
    for p in result.partitions:
        p.node = node_of(p.stream)
    usage = redis_usage(client, keys)
    for p in result.partitions:
        p.redis_events, p.redis_bytes = usage.get(p.partition, (0, 0))
    result.totals = _totals(conn, client, keys, result)
    result.webhooks = webhook_counts(conn)
    return result


def _nodes(client: SyncRedis) -> Callable[[str], str]:
    """host:port of the Redis server holding a key: one server's, or on a cluster the
    primary that owns the key's slot."""
    if isinstance(client, RedisCluster):
        def owner(key: str) -> str:
            node = client.get_node_from_key(key)  # type: ignore[no-untyped-call]
            return node.name if node is not None else "?"
        return owner
    options = client.connection_pool.connection_kwargs
    here = f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"
    if "path" in options:
        here = str(options["path"])  # a unix socket
    return lambda key: here


def redis_usage(client: SyncRedis, keys: Keys) -> dict[int, tuple[int, int]]:
    """partition -> (events in its thread streams, bytes of all its keys)."""
    found: dict[int, list[int]] = {}
    batch: list[bytes] = []

    def measure() -> None:
        with client.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.memory_usage(key, samples=0)
                if keys.is_stream(key):
                    pipe.xlen(key)
            replies: list[Any] = pipe.execute(raise_on_error=False)
        at = 0
        for key in batch:
            part = keys.partition_of(key)
            totals = found.setdefault(part, [0, 0])
            size = replies[at]
            totals[1] += size if isinstance(size, int) else 0
            at += 1
            if keys.is_stream(key):
                count = replies[at]
                totals[0] += count if isinstance(count, int) else 0
                at += 1
        batch.clear()

    for key in client.scan_iter(match=keys.pattern(), count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            measure()
    if batch:
        measure()
    return {p: (events, size) for p, (events, size) in found.items()}


def _lag(client: SyncRedis, stream: str, checkpoint: str) -> tuple[int, int | None]:
    """Entries above the checkpoint and the time of the oldest of them."""
    lag, oldest = 0, None
    for page in stream_pages(client, stream, checkpoint):
        if oldest is None:
            oldest = ms_of(page[0][0].decode())
        lag += len(page)
    return lag, oldest


def _totals(conn: psycopg.Connection, client: SyncRedis, keys: Keys,
            result: Status) -> dict[str, int]:
    threads = list(stream_threads(client, keys))
    with client.pipeline(transaction=False) as pipe:
        for thread in threads:
            pipe.xlen(keys.stream(thread))
        lengths: list[Any] = pipe.execute()
    row = conn.execute(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM messages), "
        "(SELECT count(*) FROM threads), (SELECT count(*) FROM dead_letters)").fetchone()
    assert row is not None
    return {"stream_threads": len(threads), "stream_events": sum(int(n) for n in lengths),
            "archived_events": int(row[0]), "projected_messages": int(row[1]),
            "projected_threads": int(row[2]), "dead_letters": int(row[3]),
            "lag_events": sum(p.lag_events for p in result.partitions),
            "redis_bytes": sum(p.redis_bytes for p in result.partitions),
            "pending": sum(p.pending for p in result.partitions)}
