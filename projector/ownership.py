"""Which partitions this worker owns: one Postgres advisory lock per partition log.

A lock lives as long as the worker's session, so a dead worker's partitions free
themselves; live workers (heartbeats) split the partitions evenly. Whoever takes a
partition over reads its log from the checkpoint in Postgres: there is nothing in
Redis to claim or hand over.
"""

from __future__ import annotations

import math
import os
import socket
import time
import zlib
from dataclasses import dataclass, field

import psycopg
import redis
import structlog
from redis.exceptions import RedisClusterException

from adapters.record import Keys
from adapters.redis_connect import SyncRedis, run_ids
from projector import ledger, seal

log = structlog.get_logger("duologue.projector")
REBALANCE_EVERY = 2.0


@dataclass
class Owned:
    partition: int
    stream: str
    checkpoint: str
    tried: bool = False  # this process has started a batch here (see projector.attempts)
    narrow: str | None = None  # commit one entry at a time up to this log id


@dataclass
class Ownership:
    conn: psycopg.Connection
    client: SyncRedis
    keys: Keys
    name: str
    dedupe_ttl: int = 86400
    owned: dict[int, Owned] = field(default_factory=dict)
    target: int = 0
    _next: float = 0.0

    def complete(self) -> bool:
        """Every partition we should own is owned."""
        return len(self.owned) >= self.target

    def rebalance(self, force: bool = False) -> None:
        if not force and time.monotonic() < self._next:
            return
        self._next = time.monotonic() + REBALANCE_EVERY
        live = ledger.heartbeat(self.conn, self.name, os.getpid(), socket.gethostname(),
                                self.keys.prefix, sorted(self.owned))
        self.target = math.ceil(self.keys.partitions / live)
        for partition in sorted(self.owned, reverse=True)[: max(0, len(self.owned) - self.target)]:
            self.release(self.owned[partition].stream)
        start = zlib.crc32(self.name.encode()) % self.keys.partitions
        before = set(self.owned)
        for step in range(self.keys.partitions):
            if len(self.owned) >= self.target:
                break
            partition = (start + step) % self.keys.partitions
            if partition not in self.owned:
                self._try_take(partition)
        if set(self.owned) != before:
            ledger.record_partitions(self.conn, self.name, sorted(self.owned))
        self._seal()

    def _seal(self) -> None:
        """Let gateways append to our partitions once Redis is checked (projector.seal)."""
        if not self.owned:
            return
        run_of = run_ids(self.client)
        waiting = seal.unsealed(self.client, self.keys, self.owned.values(), run_of)
        if waiting:
            seal.seal(self.conn, self.client, self.keys, waiting, run_of, self.dedupe_ttl)

    def _try_take(self, partition: int) -> None:
        stream = self.keys.log(partition)
        row = self.conn.execute("SELECT pg_try_advisory_lock(%s)",
                                (ledger.lock_id(stream),)).fetchone()
        if not row or not row[0]:
            return
        checkpoint = ledger.checkpoint(self.conn, stream, partition)
        self.owned[partition] = Owned(partition, stream, checkpoint)
        log.info("partition_taken", worker=self.name, partition=partition,
                 checkpoint=checkpoint)

    def release(self, stream: str) -> None:
        for partition, owned in list(self.owned.items()):
            if owned.stream == stream:
                del self.owned[partition]
                self.conn.execute("SELECT pg_advisory_unlock(%s)", (ledger.lock_id(stream),))
                log.info("partition_released", worker=self.name, partition=partition)

    def release_all(self) -> None:
        try:
            for owned in list(self.owned.values()):
                self.release(owned.stream)
            ledger.retire(self.conn, self.name)
        except (psycopg.Error, redis.RedisError, RedisClusterException):
            pass  # the session is going away; its locks go with it
        self.owned.clear()
