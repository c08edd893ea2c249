"""This gateway's presence leases (``adapters/presence.py``): which users have a WebSocket
here, written to Redis in order by ``presence.lua`` and renewed by a heartbeat.

- The first socket of a user here takes the lease up (publishing ``online`` if the user was
  offline); the last one closing takes it down (publishing ``offline`` with ``last_seen``
  if no other gateway holds a live lease).
- One settling task per user at a time writes what is wanted (socket or not) until Redis
  holds it: a socket opening and closing at once can never leave the writes reordered.
- The heartbeat renews, pipelined, every lease this gateway holds and no settling task is
  touching; a lease going down waits for a heartbeat in flight, so a renewal can never
  bring back a lease just removed.
- A gateway killed with SIGKILL renews nothing: its users go offline when its leases expire.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Hashable

import structlog
from redis.exceptions import RedisClusterException, RedisError

from adapters import presence
from adapters.record import lua
from adapters.redis_connect import AsyncRedis, AsyncTarget, apreload

log = structlog.get_logger("duologue.presence")
PRESENCE_LUA = lua("gateway", "presence.lua")
RETRY_CAP = 2.0  # seconds between two attempts of a failed lease write, at most
BATCH = 1000  # renewals per pipeline


class Leases:
    def __init__(self, redis: AsyncRedis, prefix: str, lease_ms: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.lease_ms = lease_ms
        self.gateway_id = uuid.uuid4().hex[:16]
        self.sockets: dict[str, set[Hashable]] = {}  # user -> its open sockets here
        self.held: set[str] = set()  # users whose lease Redis holds (as far as we know)
        self.settling: dict[str, asyncio.Task[None]] = {}
        self.idle = asyncio.Event()  # no heartbeat in flight
        self.idle.set()
        self.script = redis.register_script(PRESENCE_LUA)
        self.heartbeat: asyncio.Task[None] | None = None
        self.stopping = False

    async def start(self) -> None:
        self.heartbeat = asyncio.create_task(self._beat(), name="duologue-presence-heartbeat")

    async def stop(self, timeout: float = 5.0) -> None:
        """Take down every lease still held (the drain closed the sockets), then stop."""
        if self.heartbeat is not None:
            self.heartbeat.cancel()
            await asyncio.gather(self.heartbeat, return_exceptions=True)
        self.idle.set()
        for user in list(self.sockets):
            self.sockets.pop(user, None)
            self._settle(user)
        tasks = list(self.settling.values())
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        self.stopping = True
        for task in list(self.settling.values()):
            task.cancel()

    def joined(self, user: str, socket: Hashable) -> None:
        sockets = self.sockets.setdefault(user, set())
        sockets.add(socket)
        if len(sockets) == 1:
            self._settle(user)

    def left(self, user: str, socket: Hashable) -> None:
        sockets = self.sockets.get(user)
        if sockets is None or socket not in sockets:
            return
        sockets.discard(socket)
        if not sockets:
            del self.sockets[user]
            self._settle(user)

    def _settle(self, user: str) -> None:
        if user not in self.settling:
            self.settling[user] = asyncio.create_task(self._settling(user))

    async def _settling(self, user: str) -> None:
        backoff = 0.05
        try:
            while not self.stopping:
                wanted = user in self.sockets
                if wanted == (user in self.held):
                    return
                try:
                    if not wanted:
                        await self.idle.wait()
                    await self._write("up" if wanted else "down", user)
                except (RedisError, RedisClusterException, OSError) as exc:
                    log.warning("presence_write_failed", user=user, error=str(exc))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RETRY_CAP)
                    continue
                if wanted:
                    self.held.add(user)
                else:
                    self.held.discard(user)
        finally:
            self.settling.pop(user, None)

    async def _write(self, mode: str, user: str, client: AsyncTarget | None = None) -> None:
        await self.script(keys=[presence.key(self.prefix, user)],
                          args=self._args(mode, user), client=client)  # type: ignore[arg-type]  # a pipeline, too

    def _args(self, mode: str, user: str) -> list[str | int]:
        return [mode, self.gateway_id, self.lease_ms, presence.channel(self.prefix, user), user]

    async def _beat(self) -> None:
        every = presence.heartbeat_s(self.lease_ms)
        while True:
            await asyncio.sleep(every)
            self.idle.clear()
            try:
                await self.renew()
            except (RedisError, RedisClusterException, OSError) as exc:
                log.warning("presence_heartbeat_failed", error=str(exc))
            finally:
                self.idle.set()

    async def renew(self) -> None:
        """Renew, pipelined, the lease of every user held here and settled."""
        users = [u for u in self.held if u not in self.settling and u in self.sockets]
        if users:
            await apreload(self.redis, PRESENCE_LUA)
        for start in range(0, len(users), BATCH):
            async with self.redis.pipeline(transaction=False) as pipe:
                for user in users[start:start + BATCH]:
                    await self._write("up", user, pipe)
                await pipe.execute()
