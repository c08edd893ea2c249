"""The Redis event store as the gateway sees it: append, load state, replay, index.

Every call runs one Lua script (or one pipeline) that first checks the partition is not
fenced (``gateway/fence.lua``); the record format is ``adapters.record``. What the
thread stream no longer holds comes from the Postgres archive (``gateway.archive``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from adapters.record import (
    ALL_ARCHIVED,
    DELETED,
    DUPLICATE,
    FENCED,
    GUARD_FAILED,
    NEW_ID,
    RECEIPT,
    RECEIPT_EVENT,
    Keys,
    lua,
)
from domain.commands import DeleteMessage, EditMessage, MarkRead
from domain.ids import event_key, participants, successor
from domain.state import ThreadState, fold
from gateway.archive import Archive
from gateway.batching import ScriptBatcher
from gateway.errors import FencedError
from schemas.events import Event, MessageDeleted, MessageSent, ReadUpTo, decode_event, encode_event

APPEND_LUA = lua("gateway", "fence.lua", "append.lua")  # every gateway script is fenced
PAGE_LUA = lua("gateway", "fence.lua", "page.lua")
LOAD_LUA = lua("gateway", "fence.lua", "load.lua")


class GuardFailedError(Exception):
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


@dataclass(frozen=True, slots=True)
class Page:
    """Entries of a thread stream after some id, and where the stream's history begins."""

    entries: list[tuple[str, str]]  # (id, payload JSON)
    lo: str | None  # events below this id may be only in the archive; None: none are;
    # ALL_ARCHIVED: the thread has no stream, every event is in the archive only
    newest: str | None  # the thread's newest event id


def append_call(k: Keys, ttl: int, thread: str, sender: str, client_msg_id: str,
                event: Event, guard: Guard = Guard()) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ``append.lua`` (also used by the benchmarks' backlog filler)."""
    a, b = participants(thread)
    part = k.partition(thread)
    keys = [k.epoch(part), k.stream(thread), k.log(part), k.dedupe(thread, sender, client_msg_id),
            k.state(thread), k.index(part, a), k.index(part, b)]
    args: list[Any] = [encode_event(event), thread, ttl, k.channel(a), k.channel(b),
                       guard.kind, guard.field, guard.value]
    for name, value in guard.sets:
        args += [name, value]
    return keys, args


class EventStore:
    def __init__(
        self, redis: Redis, keys: Keys, dedupe_ttl: int, archive: Archive | None = None,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.dedupe_ttl = dedupe_ttl
        self.archive = archive or Archive(None)
        self.observe = observe  # called with each append's seconds, failed ones included
        self._append = ScriptBatcher(redis, APPEND_LUA)
        self._page = redis.register_script(PAGE_LUA)
        self._load = redis.register_script(LOAD_LUA)

    async def append(
        self, thread: str, sender: str, client_msg_id: str, event: Event, guard: Guard = Guard()
    ) -> Appended:
        keys, args = append_call(self.keys, self.dedupe_ttl, thread, sender, client_msg_id,
                                 event, guard)
        started = time.perf_counter()
        try:
            reply: list[Any] = await self._append(keys, args)
        finally:
            if self.observe is not None:
                self.observe(time.perf_counter() - started)
        if reply[0] == FENCED:
            raise FencedError()
        if reply[0] == GUARD_FAILED:
            raise GuardFailedError(thread)
        return Appended(reply[1].decode(), reply[0] == DUPLICATE)

    async def load(self, thread: str, user: str, client_msg_id: str, target: str) -> Loaded:
        """The dedupe record and the slice of state an edit/delete/read needs; a target
        or receipt that only the archive still holds comes from Postgres."""
        k, part = self.keys, self.keys.partition(thread)
        reply: Any = await self._load(
            keys=[k.epoch(part), k.stream(thread), k.state(thread),
                  k.dedupe(thread, user, client_msg_id), k.index(part, user)],
            args=[thread, target, user])
        if reply[0] == FENCED:
            raise FencedError()
        prior, payload, deleted, receipt, receipt_event, lo = (
            v.decode() or None for v in reply[1:])
        if prior is not None:
            return Loaded(prior, ThreadState(thread))
        if lo is not None and (lo == ALL_ARCHIVED or event_key(target) < event_key(lo)) \
                and (payload is None or receipt is None):
            archived = await self.archive.lookup(thread, target, user)
            if payload is None and archived.payload is not None:
                payload = archived.payload
                deleted = deleted or (successor(target) if archived.deleted else None)
            if receipt is None:
                receipt, receipt_event = archived.receipt, archived.receipt_event
        found: list[tuple[str, Event]] = []
        if payload is not None:
            sent = decode_event(payload)
            found.append((target, sent))
            if deleted is not None and isinstance(sent, MessageSent):  # x:<target> = its id
                gone = MessageDeleted(sender=sent.sender, target=target, client_msg_id="")
                found.append((deleted, gone))
        if receipt is not None and receipt_event is not None:
            found.append((receipt_event, ReadUpTo(reader=user, up_to=receipt)))
        state = fold(thread, sorted(found, key=lambda entry: event_key(entry[0])))
        return Loaded(None, state, receipt_event)

    async def threads(self, user: str) -> list[tuple[str, str]]:
        """The user's threads with their last event id, newest activity first."""
        parts = range(self.keys.partitions)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.execute_command("INFO", "server")
            for part in parts:
                pipe.get(self.keys.epoch(part))
            for part in parts:
                pipe.hgetall(self.keys.index(part, user))
            info, *found = await pipe.execute()
        run_id = str(info.get("run_id", ""))
        if any(e is not None and e.decode() != run_id for e in found[:len(parts)]):
            raise FencedError()
        pairs = [(t.decode(), i.decode()) for part in found[len(parts):] for t, i in part.items()]
        pairs.sort(key=lambda pair: event_key(pair[1]), reverse=True)
        return pairs

    async def page(self, thread: str, user: str, after: str, count: int) -> Page:
        """Up to ``count`` stream entries with id > ``after``, read atomically with the
        stream's ``lo`` and the thread's newest id."""
        k, part = self.keys, self.keys.partition(thread)
        start = "-" if after == "0" else f"({after}"
        reply: Any = await self._page(
            keys=[k.epoch(part), k.stream(thread), k.state(thread), k.index(part, user)],
            args=[thread, start, count])
        if reply[0] == FENCED:
            raise FencedError()
        _, lo, newest, entries = reply
        return Page([(i.decode(), fields[1].decode()) for i, fields in entries],
                    lo.decode() or None, newest.decode() or None)

    async def publish(self, user: str, message: str) -> None:
        await self.redis.publish(self.keys.channel(user), message)


def guard_for(command: object) -> Guard:
    """The state check the append script repeats atomically, and what it records."""
    match command:
        case EditMessage(target=target):
            return Guard("absent", DELETED + target)
        case DeleteMessage(target=target):
            return Guard("absent", DELETED + target, sets=((DELETED + target, NEW_ID),))
        case MarkRead(reader=reader, up_to=up_to):
            sets = ((RECEIPT + reader, up_to), (RECEIPT_EVENT + reader, NEW_ID))
            return Guard("after", RECEIPT + reader, up_to, sets=sets)
    return Guard()

