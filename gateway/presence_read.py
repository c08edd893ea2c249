"""Presence reads shared by ``watch`` and ``GET /v1/presence``: users' statuses at Redis
``TIME``, and which of them a viewer may be told about (protocol.md section 5, Presence).

A viewer may see a user when both share a thread (the viewer's index for the thread's
partition names it) and neither has blocked it (no ``b:<user>`` in the thread state);
anybody else is ``HIDDEN``: the answer a user who does not exist gets. A viewer always
sees themself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster

from adapters import presence
from adapters.record import BLOCKED, Keys
from adapters.redis_connect import AsyncRedis
from domain.ids import thread_id

Status = tuple[bool, int | None]  # (online, last_seen)
HIDDEN: Status = (False, None)
CHUNK = 500  # commands per pipeline


async def statuses(redis: AsyncRedis, prefix: str, users: Sequence[str],
                   lease_ms: int) -> dict[str, Status]:
    """Each user's (online, last_seen) now, read with Redis' clock."""
    found: dict[str, Status] = {}
    for start in range(0, len(users), CHUNK):
        chunk = users[start:start + CHUNK]
        cluster = isinstance(redis, RedisCluster)  # its pipelines refuse TIME: asked first
        clock: Any = await redis.time() if cluster else None
        async with redis.pipeline(transaction=False) as pipe:
            if not cluster:
                pipe.time()
            for user in chunk:
                pipe.hgetall(presence.key(prefix, user))
            replies = await pipe.execute()
        (seconds, micros), *hashes = [clock, *replies] if cluster else replies
        now_ms = seconds * 1000 + micros // 1000
        for user, fields in zip(chunk, hashes, strict=True):
            found[user] = presence.status(fields, now_ms, lease_ms)
    return found


async def visible(redis: AsyncRedis, keys: Keys,
                  pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], bool]:
    """For each (viewer, user): whether the viewer may be told the user's presence."""
    answer: dict[tuple[str, str], bool] = {}
    todo = []
    for viewer, user in dict.fromkeys(pairs):
        if viewer == user:
            answer[viewer, user] = True
        else:
            todo.append((viewer, user))
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start:start + CHUNK]
        async with redis.pipeline(transaction=False) as pipe:
            for viewer, user in chunk:
                thread = thread_id(viewer, user)
                pipe.hexists(keys.index(keys.partition(thread), viewer), thread)
                pipe.hmget(keys.state(thread), BLOCKED + viewer, BLOCKED + user)
            replies = await pipe.execute()
        for n, pair in enumerate(chunk):
            shared, blocks = replies[2 * n], replies[2 * n + 1]
            answer[pair] = bool(shared) and not any(blocks)
    return answer


async def presence_of(redis: AsyncRedis, keys: Keys, viewer: str, users: Sequence[str],
                      lease_ms: int) -> list[tuple[str, Status]]:
    """What ``viewer`` may know of each user (``HIDDEN`` for the others), in order."""
    shown = await visible(redis, keys, ((viewer, user) for user in users))
    seen = [user for user in users if shown[viewer, user]]
    found = await statuses(redis, keys.prefix, seen, lease_ms) if seen else {}
    return [(user, found.get(user, HIDDEN)) for user in users]
