"""Reading partition logs from the checkpoint: no consumer group, no pending list.

A read asks Redis for the entries *after a given id* (``XREAD``), so what it returns
is the next stretch of that log, gapless by construction. A chunk is applied only
while its partition's checkpoint is still the id the read started after (and the
compare-and-set in Postgres checks that again), so a read that raced a change of
owner, a failed commit or a restart is simply dropped: a plain read has no side
effect in Redis to undo, and nothing read is ever skipped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from redis.cluster import RedisCluster

from adapters.redis_connect import SyncRedis
from projector.entries import Entry, Poison, parse
from projector.ownership import Owned

Raw = tuple[bytes, dict[bytes, bytes] | None]
IDLE_PAUSE = (0.005, 0.05)  # seconds: a cluster's idle re-read, first and longest


@dataclass
class Chunk:
    """Entries of one partition log right after ``after``, each parsed."""

    owned: Owned
    after: str  # the log id the read started after: the checkpoint it must follow
    raw: list[Raw]
    parsed: list[Entry | Poison] = field(default_factory=list)
    # the recipients of its notifications online when it was read (``Outbox.prefetch``),
    # None when not read: the outbox then reads presence in the batch's transaction
    online: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if not self.parsed:
            self.parsed = [parse(i.decode(), f) for i, f in self.raw]

    @property
    def last(self) -> str:
        return self.raw[-1][0].decode()

    def first(self, poison: Poison | None = None) -> Chunk:
        """This chunk cut to its first entry (buried as ``poison`` if given)."""
        return Chunk(self.owned, self.after, self.raw[:1],
                     [poison] if poison is not None else self.parsed[:1], self.online)


def read(client: SyncRedis, after: dict[str, tuple[Owned, str]], count: int,
         block_ms: int) -> list[Chunk]:
    """Up to ``count`` entries of each log after its given id, waiting up to ``block_ms``."""
    if not after:
        return []
    if isinstance(client, RedisCluster):
        return _read_each(client, after, count, block_ms)
    streams: Any = {stream: position for stream, (_, position) in after.items()}
    found: Any = client.xread(streams, count=count, block=block_ms)
    return [Chunk(after[s.decode()][0], after[s.decode()][1], _entries(entries))
            for s, entries in _streams(found) if entries]


def _read_each(client: RedisCluster, after: dict[str, tuple[Owned, str]], count: int,
               block_ms: int) -> list[Chunk]:
    """On a Redis Cluster each partition log is a slot of its own, and one XREAD cannot
    span slots: one XREAD per log, pipelined (a round trip per node, in parallel), from the
    node that owns it. Without BLOCK (it holds one slot only): while every log is empty it
    reads again after a pause that grows from 5 to 50 ms, up to ``block_ms`` in all."""
    deadline = time.monotonic() + block_ms / 1000
    pause = IDLE_PAUSE[0]
    while True:
        with client.pipeline(transaction=False) as pipe:  # type: ignore[no-untyped-call]
            for stream, (_, position) in after.items():
                pipe.xread({stream: position}, count=count)
            replies: list[Any] = pipe.execute()
        chunks = [Chunk(after[s.decode()][0], after[s.decode()][1], _entries(entries))
                  for reply in replies for s, entries in _streams(reply) if entries]
        left = deadline - time.monotonic()
        if chunks or left <= 0:
            return chunks
        time.sleep(min(pause, left))
        pause = min(pause * 2, IDLE_PAUSE[1])


def usable(chunks: list[Chunk], owned: dict[int, Owned]) -> list[Chunk]:
    """Chunks of partitions still ours whose checkpoint is still where the read began
    (else the batch before them did not commit as read, and they are read again)."""
    return [c for c in chunks
            if owned.get(c.owned.partition) is c.owned and c.after == c.owned.checkpoint]


def raw_replies(client: SyncRedis) -> None:
    """Entries as Redis sends them: redis-py's dict building was a tenth of our CPU."""
    client.set_response_callback("XREAD", lambda reply, **_: reply)


def _streams(reply: Any) -> list[tuple[bytes, list[Any]]]:
    """(stream, entries) pairs of a raw XREAD reply: a map on RESP3, pairs on RESP2."""
    if not reply:
        return []
    return list(reply.items()) if isinstance(reply, dict) else [(s, e) for s, e in reply]


def _entries(reply: list[Any]) -> list[Raw]:
    """Raw entries ``[id, [field, value, ...] | None]`` as (id, fields)."""
    return [(i, f if f is None or isinstance(f, dict)  # parsed: a cluster pipeline's
             else dict(zip(f[::2], f[1::2], strict=True))) for i, f in reply]
