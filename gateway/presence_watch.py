"""``watch`` (protocol.md section 5): each connection's list of watched users, and the one
task per process that tells them what changed (docs/presence.md).

- Subscriptions: the presence channel of every user some local connection watches is
  subscribed on the hub's one pub/sub connection (``Hub.listen``), dropped when no local
  connection watches the user any more.
- A published change, or a (re)confirmed subscription, is only a hint: the user is marked
  dirty and the next round re-reads their hash. Rounds run one at a time, so what a
  connection is told follows Redis' order; a hint arriving during a round makes another.
- The sweep (``adapters.presence.sweep_s``) re-reads every watched user: expired leases
  of dead gateways, and hints lost while pub/sub reconnected, show up there.
- Visibility (``presence_read.visible``) is checked when a user joins a connection's list,
  before any change is reported to it, and at each sweep for users shown as ``HIDDEN``.
  Each connection remembers the last frame it got per user: never the same one twice in a
  row.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog
from redis.exceptions import RedisClusterException, RedisError

from adapters import presence
from adapters.record import Keys
from adapters.redis_connect import AsyncRedis
from domain.errors import InvalidError
from domain.ids import check_user_id
from gateway.connection import Connection
from gateway.errors import UnavailableError
from gateway.hub import Hub
from gateway.presence_read import HIDDEN, Status, statuses, visible
from schemas.server import Presence, encode_frame

log = structlog.get_logger("duologue.presence")
MAX_WATCHED = 200
RETRY_CAP = 2.0


@dataclass(slots=True)
class Watched:
    """One user on one connection's list."""

    last: Status | None = None  # the last presence frame the connection got for the user
    visible: bool | None = None  # None: not checked yet


class Watchers:
    def __init__(self, redis: AsyncRedis, keys: Keys, hub: Hub, lease_ms: int) -> None:
        self.redis, self.keys, self.hub, self.lease_ms = redis, keys, hub, lease_ms
        self.lists: dict[Connection, dict[str, Watched]] = {}
        self.watchers: dict[str, set[Connection]] = {}  # user -> connections watching
        self.known: dict[str, Status] = {}  # each watched user's status at the last read
        self.users_of: dict[bytes, str] = {}  # presence channel -> user
        self.dirty: set[str] = set()
        self.sweeping = False
        self.wake = asyncio.Event()
        self.round: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.tasks = [asyncio.create_task(self._rounds(), name="duologue-presence-rounds"),
                      asyncio.create_task(self._sweeps(), name="duologue-presence-sweep")]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- the frame and the connection's end ------------------------------------------
    async def watch(self, conn: Connection, users: list[str]) -> None:
        """Replace ``conn``'s list; one frame now per user it did not watch already."""
        if len(users) > MAX_WATCHED:
            raise InvalidError(f"watch takes at most {MAX_WATCHED} users, got {len(users)}")
        for user in users:
            check_user_id(user)
        old = self.lists.pop(conn, {})
        new = {user: old.get(user) or Watched() for user in users}
        for entry in new.values():
            if entry.visible is False:
                entry.visible = None  # asked again: check again (a thread may exist now)
        if new:
            self.lists[conn] = new
        added = [user for user in new if user not in old]
        for user in added:
            self.watchers.setdefault(user, set()).add(conn)
        await self._unwatch(conn, [user for user in old if user not in new])
        try:
            await self._subscribe(added)
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            raise UnavailableError("presence could not be subscribed; the list stands, "
                                   "its frames come once Redis answers") from exc
        if not await self.refresh(list(new)):
            raise UnavailableError("presence could not be read; the list stands, its "
                                   "frames come once Redis answers")

    async def forget(self, conn: Connection) -> None:
        """The connection closed: drop its list (and subscriptions nobody else needs)."""
        await self._unwatch(conn, list(self.lists.pop(conn, {})))

    async def _unwatch(self, conn: Connection, users: list[str]) -> None:
        gone = []
        for user in users:
            conns = self.watchers.get(user)
            if conns is None:
                continue
            conns.discard(conn)
            if not conns:
                del self.watchers[user]
                self.known.pop(user, None)
                gone.append(presence.channel(self.keys.prefix, user).encode())
        for channel in gone:
            self.users_of.pop(channel, None)
        if gone:
            await self.hub.unlisten(gone)

    async def _subscribe(self, users: list[str]) -> None:
        channels = {presence.channel(self.keys.prefix, u).encode(): u for u in users}
        self.users_of.update(channels)
        await self.hub.listen(list(channels), self._hint)
        orphans = [c for c, u in channels.items() if u not in self.watchers]
        if orphans:  # every connection watching them went away meanwhile
            for channel in orphans:
                self.users_of.pop(channel, None)
            await self.hub.unlisten(orphans)

    def _hint(self, channel: bytes, _: bytes | None) -> None:
        user = self.users_of.get(channel)
        if user is not None:
            self.dirty.add(user)
            self.wake.set()

    # -- rounds ------------------------------------------------------------------------
    async def refresh(self, users: list[str]) -> bool:
        """Re-read ``users`` in the next round; False when that round failed."""
        if not users:
            return True
        self.dirty.update(users)
        self.wake.set()
        return await asyncio.shield(self.round)

    async def _rounds(self) -> None:
        backoff = 0.05
        while True:
            await self.wake.wait()
            self.wake.clear()
            users, self.dirty = self.dirty, set()
            sweep, self.sweeping = self.sweeping, False
            done, self.round = self.round, asyncio.get_running_loop().create_future()
            try:
                await self._round(list(self.watchers) if sweep else list(users), sweep)
            except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
                log.warning("presence_round_failed", error=str(exc))
                done.set_result(False)
                self.dirty |= users
                self.sweeping |= sweep
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_CAP)
                self.wake.set()
                continue
            backoff = 0.05
            done.set_result(True)

    async def _round(self, users: list[str], sweep: bool) -> None:
        users = [u for u in users if u in self.watchers]
        if not users:
            return
        found = await statuses(self.redis, self.keys.prefix, users, self.lease_ms)
        changed = {u for u, status in found.items() if self.known.get(u) != status}
        self.known.update((u, s) for u, s in found.items() if u in self.watchers)
        todo: list[tuple[Connection, str, Watched]] = []
        for user in users:
            for conn in list(self.watchers.get(user, ())):
                entry = self.lists.get(conn, {}).get(user)
                if entry is not None:
                    todo.append((conn, user, entry))
        check = [(c.user, u) for c, u, e in todo if _recheck(e, found[u], u in changed, sweep)]
        shown = await visible(self.redis, self.keys, check) if check else {}
        for conn, user, entry in todo:
            entry.visible = shown.get((conn.user, user), entry.visible)
            frame = _frame(entry, found[user], sweep)
            if frame is not None:
                entry.last = frame
                conn.push(encode_frame(Presence(user=user, online=frame[0],
                                                last_seen=frame[1])))

    async def _sweeps(self) -> None:
        every = presence.sweep_s(self.lease_ms)
        while True:
            await asyncio.sleep(every)
            self.sweeping = True
            self.wake.set()
            lost = [u for c, u in self.users_of.items()
                    if c not in self.hub.active and c not in self.hub.waiters]
            if lost:  # a subscribe that failed: try again
                try:
                    await self._subscribe(lost)
                except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
                    log.warning("presence_subscribe_failed", error=str(exc))


def _recheck(entry: Watched, status: Status, changed: bool, sweep: bool) -> bool:
    """Whether to ask again if the connection may see the user before this round's frame."""
    if entry.visible is None:
        return True
    if entry.visible:
        return status != entry.last  # a change is about to be reported
    return changed or sweep  # hidden: a thread, an unblock may have made them visible


def _frame(entry: Watched, status: Status, sweep: bool) -> Status | None:
    """The frame the connection gets now for the user (None: none)."""
    if entry.visible:
        return status if status != entry.last else None
    if entry.last is None or (sweep and entry.last != HIDDEN):
        return HIDDEN  # the first answer; or, at a sweep, once after a block hid them
    return None
