"""The Redis event store as the gateway sees it: append, load state, replay, index."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, cast

from redis.asyncio import Redis

from domain.commands import DeleteMessage, EditMessage, MarkRead
from domain.ids import event_key, participants
from domain.state import ThreadState, fold
from duologue.keys import Keys
from gateway.batching import ScriptBatcher
from schemas.events import (
    Event,
    MessageDeleted,
    MessageSent,
    ReadUpTo,
    decode_event,
    encode_event,
)

APPEND_LUA = files("gateway").joinpath("append.lua").read_text()
DELETED = "x:"  # state field prefix: x:<target> exists once the target is deleted
RECEIPT = "r:"  # r:<user> is the user's current read receipt (an event id)
RECEIPT_EVENT = "ri:"  # ri:<user> is the id of the ReadUpTo event that set it
TRIMMED = "lo"  # lowest event id still retained, once a retention policy trims


class GuardFailed(Exception):
    """The state changed between the decision and the append; decide again."""


@dataclass(frozen=True, slots=True)
class Appended:
    id: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Guard:
    kind: str = ""  # '' | 'absent' | 'after'
    field: str = ""
    value: str = ""
    sets: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Loaded:
    prior: str | None
    state: ThreadState
    receipt_event: str | None = None


class EventStore:
    def __init__(
        self, redis: Redis, keys: Keys, dedupe_ttl: int,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.dedupe_ttl = dedupe_ttl
        self.observe = observe  # called with each append's seconds, failed ones included
        self._append = ScriptBatcher(redis, APPEND_LUA)

    async def append(
        self, thread: str, sender: str, client_msg_id: str, event: Event, guard: Guard = Guard()
    ) -> Appended:
        k = self.keys
        a, b = participants(thread)
        part = k.partition(thread)
        keys = [k.stream(thread), k.log(part), k.dedupe(thread, sender, client_msg_id),
                k.state(thread), k.index(part, a), k.index(part, b)]
        args: list[str | bytes | int] = [
            encode_event(event), thread, self.dedupe_ttl, k.channel(a), k.channel(b),
            guard.kind, guard.field, guard.value]
        for name, value in guard.sets:
            args += [name, value]
        started = time.perf_counter()
        try:
            event_id, status = cast(tuple[bytes, int], await self._append(keys, args))
        finally:
            if self.observe is not None:
                self.observe(time.perf_counter() - started)
        if status == 2:
            raise GuardFailed(thread)
        return Appended(event_id.decode(), status == 1)

    async def load(self, thread: str, user: str, client_msg_id: str, target: str) -> Loaded:
        """The dedupe record and the slice of state an edit/delete/read needs."""
        state_key = self.keys.state(thread)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.dedupe(thread, user, client_msg_id))
            pipe.xrange(self.keys.stream(thread), target, target, count=1)
            pipe.hmget(state_key, [DELETED + target, RECEIPT + user, RECEIPT_EVENT + user])
            prior, entries, (deleted, receipt, receipt_event) = await pipe.execute()
        found: list[tuple[str, Event]] = []
        if entries:
            sent = decode_event(entries[0][1][b"e"])
            found.append((target, sent))
            if deleted is not None and isinstance(sent, MessageSent):  # x:<target> = its id
                gone = MessageDeleted(sender=sent.sender, target=target, client_msg_id="")
                found.append((deleted.decode(), gone))
        if receipt is not None and receipt_event is not None:
            found.append((receipt_event.decode(), ReadUpTo(reader=user, up_to=receipt.decode())))
        state = fold(thread, sorted(found, key=lambda entry: event_key(entry[0])))
        return Loaded(prior.decode() if prior else None, state,
                      receipt_event.decode() if receipt_event else None)

    async def threads(self, user: str) -> list[tuple[str, str]]:
        """The user's threads with their last event id, newest activity first."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in range(self.keys.partitions):
                pipe.hgetall(self.keys.index(part, user))
            found = await pipe.execute()
        pairs = [(t.decode(), i.decode()) for part in found for t, i in part.items()]
        pairs.sort(key=lambda pair: event_key(pair[1]), reverse=True)
        return pairs

    async def replay(self, thread: str, after: str, count: int) -> list[tuple[str, str]]:
        """Up to ``count`` entries with id > ``after``, as (id, payload JSON)."""
        start = "-" if after == "0" else f"({after}"
        entries: Any = await self.redis.xrange(self.keys.stream(thread), start, "+", count=count)
        return [(i.decode(), fields[b"e"].decode()) for i, fields in entries]

    async def bounds(self, thread: str) -> tuple[str | None, str | None]:
        """(lowest retained id if trimmed, last id) of a thread stream."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.state(thread), TRIMMED)
            pipe.xrevrange(self.keys.stream(thread), "+", "-", count=1)
            low, last = await pipe.execute()
        return (low.decode() if low else None, last[0][0].decode() if last else None)

    async def publish(self, user: str, message: str) -> None:
        await self.redis.publish(self.keys.channel(user), message)


def guard_for(command: object) -> Guard:
    """The state check the append script repeats atomically, and what it records."""
    match command:
        case EditMessage(target=target):
            return Guard("absent", DELETED + target)
        case DeleteMessage(target=target):
            return Guard("absent", DELETED + target, sets=((DELETED + target, "$id"),))
        case MarkRead(reader=reader, up_to=up_to):
            sets = ((RECEIPT + reader, up_to), (RECEIPT_EVENT + reader, "$id"))
            return Guard("after", RECEIPT + reader, up_to, sets=sets)
    return Guard()
