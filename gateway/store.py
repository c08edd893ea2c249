"""The Redis event store as the gateway sees it: append, load state, replay, index.

Every call runs one Lua script (or one pipeline) that first checks the partition is not
fenced (``gateway/fence.lua``); the record format is ``adapters.record``. What the
thread stream no longer holds comes from the Postgres archive (``gateway.archive``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from adapters.record import (
    ARCHIVED,
    BLOCKED,
    BLOCKED_STATUS,
    DUPLICATE,
    FENCED,
    GUARD_FAILED,
    MISSING,
    RATE_LIMITED,
    Keys,
    lua,
)
from adapters.redis_connect import AsyncRedis, arun_ids
from domain.errors import BlockedError, NotFoundError
from domain.ids import event_key, participants
from gateway.archive import Archive
from gateway.batching import ScriptBatcher
from gateway.errors import FencedError, NotReplicatedError, RateLimitedError
from schemas.events import Event, encode_event

APPEND_LUA = lua("gateway", "fence.lua", "budget.lua", "append.lua")  # every one is fenced
TOUCH_LUA = lua("gateway", "fence.lua", "touch.lua")  # a duplicate's answer, replicated
SEND_BUDGET_LUA = lua("gateway", "budget.lua", "send_budget.lua")  # on a Redis Cluster
PAGE_LUA = lua("gateway", "fence.lua", "page.lua")
LOAD_LUA = lua("gateway", "fence.lua", "load.lua")
TYPING_LUA = lua("gateway", "typing.lua")
READ_BUDGET_LUA = lua("gateway", "read_budget.lua")
THREADS_LUA = lua("gateway", "threads.lua")  # one Redis: a pipeline of 129 costs ~1 ms
UNDECIDED = (DUPLICATE, GUARD_FAILED, ARCHIVED, FENCED)  # answers that cost no budget
REMEMBERED = 10_000  # read refusals and typing relays remembered before ended ones go


class GuardFailedError(Exception):
    """The state changed between the decision and the append; decide again."""


class ArchivedTargetError(Exception):
    """A reply's target is older than what the stream holds: the archive must say."""


@dataclass(frozen=True, slots=True)
class Appended:
    id: str
    duplicate: bool


Check = tuple[str, str, str]  # (kind, state field, value): append.lua's checks


@dataclass(frozen=True, slots=True)
class Guard:
    """What the append script re-checks atomically, and the state fields it then sets."""

    checks: tuple[Check, ...] = ()
    sets: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Loaded:
    """``load.lua``'s answer: the dedupe record, the target's payload, the stream's ``lo``
    and the requested thread state fields (absent ones left out)."""

    prior: str | None
    payload: str | None = None
    lo: str | None = None
    values: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """Entries of a thread stream after some id, and where the stream's history begins."""

    entries: list[tuple[str, str]]  # (id, payload JSON)
    lo: str | None  # events below this id may be only in the archive; None: none are;
    # ALL_ARCHIVED: the thread has no stream, every event is in the archive only
    newest: str | None  # the thread's newest event id


@dataclass(frozen=True, slots=True)
class Budget:
    """Per-user limits the append script enforces (protocol.md section 8): commands per
    second with a burst, and body bytes per second with a burst; a rate of 0 is off."""

    rate: float = 0.0
    burst: float = 0.0
    byte_rate: float = 0.0
    byte_burst: float = 0.0

    @property
    def on(self) -> bool:
        return self.rate > 0 or self.byte_rate > 0

    def argument(self, cost: int) -> str:
        return f"{_limits(self)} {cost}"


@functools.lru_cache(maxsize=8)
def _limits(budget: Budget) -> str:
    """The limits part of a budget's script argument, formatted once (4 floats a send)."""
    return f"{budget.rate:g} {budget.burst:g} {budget.byte_rate:g} {budget.byte_burst:g}"


NO_BUDGET = Budget()


def body_bytes(event: Event) -> int:
    """What an event costs the byte budget: its body's UTF-8 bytes (0 without a body)."""
    body = getattr(event, "body", None)
    return len(body.encode()) if isinstance(body, str) else 0


def append_call(k: Keys, ttl: int, thread: str, sender: str, client_msg_id: str,
                event: Event, guard: Guard = Guard(), budget: Budget = NO_BUDGET
                ) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ``append.lua`` (also used by the benchmarks' backlog filler)."""
    a, b = participants(thread)
    part = k.partition(thread)
    keys = [k.epoch(part), k.stream(thread), k.log(part), k.dedupe(thread, sender, client_msg_id),
            k.state(thread), k.index(part, a), k.index(part, b),
            # untouched when the budget is off: a key of the thread's slot stands in
            k.budget(sender) if budget.on else k.state(thread)]
    args: list[Any] = [encode_event(event), thread, ttl, k.channel(a), k.channel(b),
                       budget.argument(body_bytes(event)), len(guard.checks)]
    for check in guard.checks:
        args += check
    for name, value in guard.sets:
        args += [name, value]
    return keys, args


class EventStore:
    def __init__(
        self, redis: AsyncRedis, keys: Keys, dedupe_ttl: int, archive: Archive | None = None,
        observe: Callable[[float], None] | None = None, typing_every_ms: int = 2000,
        budget: Budget = NO_BUDGET, ack_replicas: int = 0, ack_wait_ms: int = 1000,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.dedupe_ttl = dedupe_ttl
        self.typing_every_ms = typing_every_ms  # one relayed per sender and thread (0: all)
        self.budget = budget
        self.archive = archive or Archive(None)
        self.observe = observe  # called with each append's seconds, failed ones included
        self._append = ScriptBatcher(redis, APPEND_LUA, ack_replicas, ack_wait_ms)
        self._touch = ScriptBatcher(redis, TOUCH_LUA, ack_replicas, ack_wait_ms)
        self.ack_replicas = ack_replicas
        self._page = redis.register_script(PAGE_LUA)
        self._load = redis.register_script(LOAD_LUA)
        self._typing = redis.register_script(TYPING_LUA)
        self._read_budget = redis.register_script(READ_BUDGET_LUA)
        self._threads = redis.register_script(THREADS_LUA)
        # a cluster keeps a user's budget in the user's slot: taken before the append, in
        # batches as the appends are (a call of its own per send: 176 us of gateway CPU per
        # acked send against 148 batched, docs/cluster.md)
        self.cluster = isinstance(redis, RedisCluster)
        self._send_budget = ScriptBatcher(redis, SEND_BUDGET_LUA, drop_abandoned=True,
                                          idempotent=False)  # a take or refund counts
        self._reads_refused: dict[str, float] = {}  # user -> monotonic end of a refusal
        self._typed: dict[tuple[str, str], float] = {}  # (sender, thread) -> relay + interval

    async def append(
        self, thread: str, sender: str, client_msg_id: str, event: Event, guard: Guard = Guard()
    ) -> Appended:
        apart = self.cluster and self.budget.on  # the budget taken in its own script
        spec = self.budget.argument(body_bytes(event))
        if apart:
            wait = int(await self._send_budget(keys=[self.keys.budget(sender)],
                                               args=[spec, "take"]))
            if wait:  # a resend of an appended command is answered, free, as on one Redis
                prior: Any = await self.redis.get(self.keys.dedupe(thread, sender, client_msg_id))
                if prior is None:
                    raise RateLimitedError(wait)
                await self.confirm(thread, sender, client_msg_id, prior.decode())
                return Appended(prior.decode(), True)
        keys, args = append_call(self.keys, self.dedupe_ttl, thread, sender, client_msg_id,
                                 event, guard, NO_BUDGET if apart else self.budget)
        started = time.perf_counter()
        reply: list[Any] | None = None
        stored = False  # it may have been appended: no refund
        try:
            reply = await self._append(keys, args)
        except (NotReplicatedError, TimeoutError, RedisTimeoutError, asyncio.CancelledError):
            stored = True
            raise
        finally:
            if self.observe is not None:
                self.observe(time.perf_counter() - started)
            if apart and not stored and (reply is None or reply[0] in UNDECIDED):
                # as append.lua does on one Redis: charge only a decided command
                with contextlib.suppress(RedisError, RedisClusterException, OSError):
                    await self._send_budget(keys=[self.keys.budget(sender)],
                                            args=[spec, "refund"])
        assert reply is not None
        if reply[0] == FENCED:
            raise FencedError()
        if reply[0] == GUARD_FAILED:
            raise GuardFailedError(thread)
        if reply[0] == BLOCKED_STATUS:
            raise BlockedError("the other participant has blocked this thread")
        if reply[0] == MISSING:
            raise NotFoundError("reply_to is not a message of this thread")
        if reply[0] == ARCHIVED:
            raise ArchivedTargetError(thread)
        if reply[0] == RATE_LIMITED:
            raise RateLimitedError(int(reply[1]))
        return Appended(reply[1].decode(), reply[0] == DUPLICATE)

    async def confirm(self, thread: str, user: str, client_msg_id: str, prior: str) -> None:
        """With ``DUOLOGUE_ACK_REPLICAS``: return once the replicas hold the recorded event
        a duplicate is answered with (``NotReplicatedError`` when they do not in time)."""
        if not self.ack_replicas:
            return
        k = self.keys
        reply: Any = await self._touch(
            [k.epoch(k.partition(thread)), k.dedupe(thread, user, client_msg_id)], [prior])
        if reply[0] == FENCED:
            raise FencedError()

    async def load(self, thread: str, user: str, client_msg_id: str, target: str | None,
                   fields: list[str]) -> Loaded:
        """The dedupe record, the target event and the thread state fields a command
        decides on, read atomically (``gateway.decisions`` turns them into state)."""
        k, part = self.keys, self.keys.partition(thread)
        reply: Any = await self._load(
            keys=[k.epoch(part), k.stream(thread), k.state(thread),
                  k.dedupe(thread, user, client_msg_id), k.index(part, user)],
            args=[thread, target or "", *fields])
        if reply[0] == FENCED:
            raise FencedError()
        prior, payload, lo, *values = (v.decode() or None for v in reply[1:])
        if prior is not None:
            return Loaded(prior)
        found = {name: value for name, value in zip(fields, values, strict=True)
                 if value is not None}
        return Loaded(None, payload, lo, found)

    async def threads(self, user: str) -> list[tuple[str, str]]:
        """The user's threads with their last event id, newest activity first (ties by
        thread)."""
        parts = range(self.keys.partitions)
        if self.cluster:
            flat = await self._threads_by_pipeline(user)
        else:  # one script: the pipeline below cost ~1 ms of gateway CPU a hello
            reply: Any = await self._threads(
                keys=[*(self.keys.epoch(p) for p in parts),
                      *(self.keys.index(p, user) for p in parts)])
            if reply[0] == FENCED:
                raise FencedError()
            flat = reply[1:]
        pairs = [(flat[n].decode(), flat[n + 1].decode()) for n in range(0, len(flat), 2)]
        pairs.sort()  # ties (one ms in two streams) by thread, as GET /v1/threads orders
        pairs.sort(key=lambda pair: event_key(pair[1]), reverse=True)  # stable
        return pairs

    async def _threads_by_pipeline(self, user: str) -> list[bytes]:
        """On a Redis Cluster: every partition's epoch and the user's index in it, as a
        flat list of thread, id, thread, id, ..., or ``FencedError``."""
        parts = range(self.keys.partitions)
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in parts:
                pipe.get(self.keys.epoch(part))
            for part in parts:
                pipe.hgetall(self.keys.index(part, user))
            found = await pipe.execute()
        run_of = await arun_ids(self.redis)  # each primary's
        if any(e is not None and e.decode() != run_of(self.keys.epoch(part))
               for part, e in zip(parts, found, strict=False)):
            raise FencedError()
        return [item for index in found[len(parts):] for pair in index.items()
                for item in pair]

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

    async def take_read(self, user: str, rate: float, burst: float) -> None:
        """One token of ``user``'s read budget, or ``RateLimitedError`` (a rate of 0: off).
        A refusal is remembered here until its wait ends: no token can come back sooner
        (other gateways only take), so a flood of reads is refused without Redis."""
        if rate <= 0:
            return
        if refused_ms := self.reads_refused_ms(user):
            raise RateLimitedError(refused_ms)
        now = time.monotonic()
        wait: int = await self._read_budget(keys=[self.keys.read_budget(user)],
                                            args=[rate, burst])
        if wait:
            if len(self._reads_refused) >= REMEMBERED:
                self._reads_refused = {u: t for u, t in self._reads_refused.items() if t > now}
            self._reads_refused[user] = now + int(wait) / 1000
            raise RateLimitedError(int(wait))

    def reads_refused_ms(self, user: str) -> int:
        """How long ``user``'s reads are still known refused here, in ms (0: not known)."""
        until = self._reads_refused.get(user)
        if until is None:
            return 0
        left = until - time.monotonic()
        if left <= 0:
            del self._reads_refused[user]
            return 0
        return max(1, int(left * 1000))

    async def typing(self, thread: str, sender: str, receiver: str, message: str) -> bool:
        """Relay a typing notice to ``receiver`` unless they block the thread or ``sender``
        had one relayed in this thread in the last ``typing_every_ms``; True if relayed."""
        now = time.monotonic()
        until = self._typed.get((sender, thread))
        if until is not None and now < until:
            return False  # relayed from here within the interval: Redis would drop it too
        relayed = await self._typing(
            keys=[self.keys.state(thread), self.keys.typing(thread, sender)],
            args=[BLOCKED + receiver, self.keys.channel(receiver), message,
                  self.typing_every_ms])
        if relayed and self.typing_every_ms:
            if len(self._typed) >= REMEMBERED:
                self._typed = {k: t for k, t in self._typed.items() if t > now}
            self._typed[(sender, thread)] = now + self.typing_every_ms / 1000
        return bool(relayed)
