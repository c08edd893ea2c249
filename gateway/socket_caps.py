"""At most ``DUOLOGUE_MAX_SOCKETS`` open WebSockets per user across every gateway
(protocol.md section 8): the next handshake is refused with HTTP 429.

Each gateway writes, per user with sockets here, how many it holds and until when that
count is good (a lease renewed by a heartbeat, as presence is); ``sockets.lua`` admits a
handshake when the live counts of the other gateways plus this one's stay within the cap.
A gateway killed with SIGKILL renews nothing: its counts stop counting when their lease
ends (``DUOLOGUE_PRESENCE_LEASE``, 45 s by default).

The count here is this process's truth, reserved before the script runs, so two
handshakes racing on one gateway cannot both take the last place; across gateways the
script is atomic on the user's key. If Redis cannot answer, the handshake is admitted:
the ``hello`` that follows needs Redis anyway and answers for it.

A socket closed for breaking the protocol (a frame over the limit, 1009; too many refused
frames, 1008) by a user another of whose sockets did so in the last
``DUOLOGUE_VIOLATION_HOLD`` seconds (10) keeps its place that long after it closed. A
client that breaks the protocol once and reconnects loses nothing; one that does it in a
loop holds all its user's places within a second and is then refused at the handshake
(429, answered before the upgrade: ``gateway.upgrade_screen``) instead of costing a
handshake, a ``hello`` and a close each time (docs/protocol-notes.md, "Limits").
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from redis.exceptions import RedisClusterException, RedisError

from adapters import presence
from adapters.record import Keys, lua
from adapters.redis_connect import AsyncRedis, AsyncTarget, apreload

log = structlog.get_logger("duologue.sockets")
SOCKETS_LUA = lua("gateway", "sockets.lua")
BATCH = 1000  # renewals per pipeline
REMEMBERED = 4096  # users whose last protocol break is remembered, before pruning


class SocketCaps:
    def __init__(self, redis: AsyncRedis, keys: Keys, gateway_id: str, maximum: int,
                 lease_ms: int) -> None:
        self.redis = redis
        self.keys = keys
        self.gateway_id = gateway_id
        self.maximum = maximum  # 0: no cap
        self.lease_ms = lease_ms
        self.local: dict[str, int] = {}  # user -> sockets open (or being admitted) here
        self.script = redis.register_script(SOCKETS_LUA)
        self.writes: set[asyncio.Task[None]] = set()
        self.holds: dict[asyncio.TimerHandle, str] = {}  # places held, until the handle runs
        self.broke: dict[str, float] = {}  # user -> when a socket last broke the protocol
        self.heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.maximum > 0:
            self.heartbeat = asyncio.create_task(self._beat(), name="duologue-socket-caps")

    async def stop(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.cancel()
            await asyncio.gather(self.heartbeat, return_exceptions=True)
        for handle in list(self.holds):  # the process ends: nothing is held any more
            handle.cancel()
            self._hold_ended(handle)
        if self.writes:
            await asyncio.wait(list(self.writes), timeout=2)

    async def admit(self, user: str) -> bool:
        """Take a place for a new socket of ``user``; False when the cap is reached."""
        if self.maximum <= 0:
            return True
        count = self.local.get(user, 0) + 1
        if count > self.maximum:
            return False
        self.local[user] = count  # reserved before the await
        try:
            admitted = await self.script(
                keys=[self.keys.sockets(user)],
                args=["join", self.gateway_id, count, self.lease_ms, self.maximum])
        except (RedisError, RedisClusterException, OSError) as exc:
            log.warning("socket_cap_unknown", user=user, error=str(exc))
            return True
        if not admitted:
            self._drop(user)
            self._write(user)  # what this gateway holds now, for the others to count
        return bool(admitted)

    def release(self, user: str, hold: float = 0.0) -> None:
        """A socket of ``user`` admitted here closed. ``hold``: it was closed for breaking
        the protocol; if another socket of the user did so in the last ``hold`` seconds,
        its place is given back only ``hold`` seconds from now (the first is forgiven)."""
        if self.maximum <= 0:
            return
        if hold > 0 and self._broke_again(user, hold):
            handle: asyncio.TimerHandle = asyncio.get_running_loop().call_later(
                hold, lambda: self._hold_ended(handle))
            self.holds[handle] = user
            return
        self._drop(user)
        self._write(user)

    def _broke_again(self, user: str, hold: float) -> bool:
        now = time.monotonic()
        last = self.broke.get(user)
        if last is None and len(self.broke) >= REMEMBERED:
            self.broke = {u: t for u, t in self.broke.items() if now - t < hold}
        self.broke[user] = now
        return last is not None and now - last < hold

    def _hold_ended(self, handle: asyncio.TimerHandle) -> None:
        user = self.holds.pop(handle, None)
        if user is not None:
            self.release(user)

    def full(self, user: str) -> bool:
        """Whether this gateway alone holds every place of ``user`` (no Redis asked)."""
        return 0 < self.maximum <= self.local.get(user, 0)

    def _drop(self, user: str) -> None:
        count = self.local.get(user, 0) - 1
        if count > 0:
            self.local[user] = count
        else:
            self.local.pop(user, None)

    def _write(self, user: str) -> None:
        task = asyncio.create_task(self._set(user))
        self.writes.add(task)
        task.add_done_callback(self.writes.discard)

    async def _set(self, user: str, client: AsyncTarget | None = None) -> None:
        # the heartbeat writes it again
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            await self.script(keys=[self.keys.sockets(user)],
                              args=["set", self.gateway_id, self.local.get(user, 0),
                                    self.lease_ms], client=client)  # type: ignore[arg-type]  # a pipeline, too

    async def _beat(self) -> None:
        every = presence.heartbeat_s(self.lease_ms)
        while True:
            await asyncio.sleep(every)
            users = list(self.local)
            for start in range(0, len(users), BATCH):
                try:
                    await apreload(self.redis, SOCKETS_LUA)
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for user in users[start:start + BATCH]:
                            await self._set(user, pipe)
                        await pipe.execute()
                except (RedisError, RedisClusterException, OSError) as exc:
                    log.warning("socket_caps_heartbeat_failed", error=str(exc))
