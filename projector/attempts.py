"""Crash loops: an entry that kills the projector process must not stall its partition.

The first time a process commits a partition's batch it records, in Redis, that a
process started at that log position. When processes keep dying there, the partition
is stepped through one entry at a time over the batch that killed them, and the entry
they die on alone is buried in the dead letters, so the rest goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.record import Keys, lua
from adapters.redis_connect import SyncRedis, scripted
from projector.reading import Chunk

ATTEMPTS_LUA = lua("projector", "attempts.lua")
TOLERATED = 10  # deaths tolerated at one position before stepping, then before burying


@dataclass(frozen=True, slots=True)
class Plan:
    mode: str  # 'batch' | 'single' | 'bury'
    until: str  # with 'single'/'bury': the last log id to step through singly


def plan_first_batches(client: SyncRedis, keys: Keys, chunks: list[Chunk]) -> list[Plan]:
    """Record that this process starts on these chunks; how to apply each of them."""
    script: Any = scripted(client, ATTEMPTS_LUA)
    with client.pipeline(transaction=False) as pipe:
        for chunk in chunks:
            script(keys=[keys.attempts(chunk.owned.partition)],
                   args=[chunk.after, chunk.last, TOLERATED], client=pipe)
        replies: list[Any] = pipe.execute()
    return [Plan(mode.decode(), until.decode()) for mode, until in replies]
