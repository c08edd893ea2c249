"""Live fan-out: one pub/sub listener per gateway process.

The append script publishes ``<thread> <id> <event frame>`` to each participant's
channel (``<thread> ~ <frame>`` for typing). The hub subscribes a user's channel
while the user has a connection here and hands each message to those connections.

Pub/sub is only a hint. A channel's subscription is confirmed before the
connection reads its starting point, and every later confirmation of the same
channel (redis-py resubscribes after a reconnect) means messages may have been
lost, so the user's connections are caught up from the streams.

The reader blocks on the connection (no read timeout: a timeout armed and cancelled per
message cost more than the message, docs/benchmarks.md "Issue 13 levers"). A watchdog
pings when nothing has been heard for ``PING_EVERY`` seconds, and a connection that then
stays silent for ``SILENT_FOR`` more (a peer gone without a reset, a partition) is
dropped, so the reader reconnects and resubscribes, and the gap is caught up.

Other channels (presence) are ``listen``ed to on the same connection: their messages and
every confirmation of their subscription (the first, and each one after a reconnect) go
to the listener, which treats them as hints to re-read.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterable

import structlog
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio.client import PubSub
from redis.exceptions import RedisClusterException, RedisError

from gateway.connection import Connection
from gateway.pubsub_source import PubSubSource

log = structlog.get_logger("duologue.hub")
SUBSCRIBE_TIMEOUT = 5.0
PING_EVERY = 5.0  # seconds without a word from pub/sub before the watchdog pings
SILENT_FOR = 10.0  # seconds a ping may go unanswered before the connection is dropped


class Hub:
    def __init__(
        self, source: PubSubSource, channel_of: Callable[[str], str],
        on_gap: Callable[[Connection], None],  # starts a catch-up of the connection
        ping_every: float = PING_EVERY, silent_for: float = SILENT_FOR,
    ) -> None:
        self.source = source
        self.pubsub: PubSub | None = None  # opened by start()
        self.channel_of = channel_of
        self.on_gap = on_gap
        self.own = f"{channel_of('')}~gateway:{uuid.uuid4().hex}".encode()
        self.local: dict[bytes, set[Connection]] = {}
        self.active: set[bytes] = set()
        self.waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self.listeners: dict[bytes, Callable[[bytes, bytes | None], None]] = {}
        self.task: asyncio.Task[None] | None = None
        self.watchdog: asyncio.Task[None] | None = None
        self.ping_every, self.silent_for = ping_every, silent_for
        self.heard = 0.0  # loop time the reader last got anything (a message, a pong)
        self.healthy = False
        self.lost = False  # the connection dropped at least once
        # one (un)subscribe at a time: redis-py's PubSub opens a second connection when two
        # commands race to open its first, and what went out on the one it forgets is
        # never confirmed (a gateway's first sockets waited out SUBSCRIBE_TIMEOUT)
        self.sending = asyncio.Lock()

    async def start(self) -> None:
        self.pubsub = await self.source.open()
        self.heard = asyncio.get_running_loop().time()
        self.task = asyncio.create_task(self._run(), name="duologue-hub")
        self.watchdog = asyncio.create_task(self._watch(), name="duologue-hub-watchdog")

    async def stop(self) -> None:
        tasks = [t for t in (self.task, self.watchdog) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.pubsub is not None:
            await self.ps.aclose()
        await self.source.close()

    @property
    def ps(self) -> PubSub:
        assert self.pubsub is not None, "Hub.start() opens it"
        return self.pubsub

    async def _subscribe(self, *channels: bytes) -> None:
        async with self.sending:
            await self.ps.subscribe(*channels)

    async def _unsubscribe(self, *channels: bytes) -> None:
        async with self.sending:
            await self.ps.unsubscribe(*channels)

    async def attach(self, conn: Connection) -> None:
        """Register ``conn`` and return once its user's channel is subscribed."""
        channel = self.channel_of(conn.user).encode()
        self.local.setdefault(channel, set()).add(conn)
        if channel in self.active:
            return
        waiter = asyncio.get_running_loop().create_future()
        waiters = self.waiters.setdefault(channel, [])
        waiters.append(waiter)
        conn.delivery.awaiting_subscription = True  # the confirmation it waits for is no gap
        try:
            if len(waiters) == 1:
                await self._subscribe(channel)
            await asyncio.wait_for(waiter, SUBSCRIBE_TIMEOUT)
        except BaseException:
            self._forget_waiter(channel, waiter)
            raise
        finally:
            conn.delivery.awaiting_subscription = False

    def _forget_waiter(self, channel: bytes, waiter: asyncio.Future[None]) -> None:
        waiters = self.waiters.get(channel, [])
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            self.waiters.pop(channel, None)

    async def detach(self, conn: Connection) -> None:
        channel = self.channel_of(conn.user).encode()
        conns = self.local.get(channel)
        if conns is None:
            return
        conns.discard(conn)
        if conns:
            return
        del self.local[channel]
        self.active.discard(channel)
        if channel not in self.waiters:
            # if the connection is gone, redis-py resubscribes only what is left
            with contextlib.suppress(RedisError, RedisClusterException, OSError):
                await self._unsubscribe(channel)

    async def listen(self, channels: Iterable[bytes],
                     listener: Callable[[bytes, bytes | None], None]) -> None:
        """Subscribe ``channels`` for ``listener`` (called with each message, and with
        None on each confirmation); return once every one is confirmed."""
        loop = asyncio.get_running_loop()
        pending: list[tuple[bytes, asyncio.Future[None]]] = []
        fresh: list[bytes] = []
        for channel in channels:
            self.listeners[channel] = listener
            if channel in self.active:
                continue
            waiter = loop.create_future()
            waiters = self.waiters.setdefault(channel, [])
            waiters.append(waiter)
            pending.append((channel, waiter))
            if len(waiters) == 1:
                fresh.append(channel)
        try:
            if fresh:
                await self._subscribe(*fresh)
            if pending:
                await asyncio.wait_for(asyncio.gather(*(w for _, w in pending)),
                                       SUBSCRIBE_TIMEOUT)
        except BaseException:
            for channel, waiter in pending:
                self._forget_waiter(channel, waiter)
            raise

    async def unlisten(self, channels: Iterable[bytes]) -> None:
        gone = []
        for channel in channels:
            self.listeners.pop(channel, None)
            self.active.discard(channel)
            if channel not in self.waiters:
                gone.append(channel)
        if gone:
            with contextlib.suppress(RedisError, RedisClusterException, OSError):
                await self._unsubscribe(*gone)

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                if self.own not in self.ps.channels:
                    await self._subscribe(self.own)
                message = await self.ps.get_message(timeout=None)
                self.heard = asyncio.get_running_loop().time()
                if message is not None:
                    self._dispatch(message)
                await self._drain()
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a Redis error, or redis-py's own (never the end)
                if self.healthy:
                    log.warning("pubsub_lost", error=f"{type(exc).__name__}: {exc}")
                self.healthy = False
                self.lost = True
                self.active.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                if self.source.moves:
                    await self._move()

    async def _drain(self) -> None:
        """Hand out every reply the connection's hiredis reader already holds, without a
        ``get_message`` each: the messages of one socket read come in bursts (a batch of
        appends), and redis-py's path costs about 6 us a message against under 1 us here
        (docs/benchmarks.md, "Issue 13 levers"). Anything but a message goes through
        redis-py's own handling, which keeps its subscription bookkeeping."""
        parser = getattr(self.ps.connection, "_parser", None)
        reader = getattr(parser, "_reader", None)
        if reader is None:  # not connected, or redis-py without hiredis
            return
        while (reply := reader.gets()) is not NOT_ENOUGH_DATA:
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                self._message(reply[1], reply[2])
                continue
            if isinstance(reply, Exception):
                raise reply
            message = await self.ps.handle_message(reply)  # type: ignore[no-untyped-call]
            if message is not None:
                self._dispatch(message)

    async def _watch(self) -> None:
        """Ping a quiet connection; drop one that stays silent (the reader reconnects)."""
        while True:
            await asyncio.sleep(self.ping_every)
            try:
                await self._check_silence()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next round tries again
                log.warning("pubsub_watchdog_failed", error=f"{type(exc).__name__}: {exc}")

    async def _check_silence(self) -> None:
        loop = asyncio.get_running_loop()
        connection = self.ps.connection
        if loop.time() - self.heard < self.ping_every:
            return  # the reader heard something lately
        if connection is None or not connection.is_connected:
            return  # the reader is (re)connecting, bounded by the connection's timeouts
        asked = loop.time()
        try:
            # connected: no lock needed (it guards the first connect), and none held
            async with asyncio.timeout(self.silent_for):
                await self.ps.ping()
            await asyncio.sleep(max(0.0, asked + self.silent_for - loop.time()))
        except TimeoutError:  # before OSError: in Python 3.11 it is one
            pass
        except (RedisError, RedisClusterException, OSError):
            return  # the reader meets the same failure and reconnects
        if self.heard < asked and self.ps.connection is connection:
            log.warning("pubsub_silent", seconds=round(loop.time() - asked, 1))
            await connection.disconnect()  # the blocked read fails: reconnect, resubscribe

    async def _move(self) -> None:
        """Subscribe everything again on another cluster node (``PubSubSource``); each
        confirmation there is a gap, as after redis-py's own resubscription."""
        old = self.ps
        # what the hub wants subscribed, not what the old connection had confirmed (a
        # move that failed half-way leaves that empty)
        channels = list({*self.local, *self.listeners, *self.waiters, self.own})
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            await old.aclose()
        self.pubsub = await self.source.open()
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            if channels:
                await self._subscribe(*channels)  # failing: the next round moves again

    def _dispatch(self, message: dict[str, object]) -> None:
        kind, channel, data = message["type"], message["channel"], message["data"]
        if not isinstance(channel, bytes):
            return
        if kind == "message":
            if isinstance(data, bytes):
                self._message(channel, data)
            return
        listener = self.listeners.get(channel)
        if kind == "subscribe":
            self._confirmed(channel)
            if listener is not None:
                listener(channel, None)
        elif kind == "unsubscribe":
            self.active.discard(channel)  # late: a reconnect may have resubscribed it

    def _message(self, channel: bytes, data: bytes) -> None:
        listener = self.listeners.get(channel)
        if listener is not None:
            listener(channel, data)
        else:
            self._deliver(channel, data)

    def _confirmed(self, channel: bytes) -> None:
        if channel == self.own:
            if not self.healthy and self.lost:
                log.info("pubsub_recovered")  # after ``pubsub_lost``
            self.healthy = True
            return
        self.active.add(channel)
        for waiter in self.waiters.pop(channel, []):
            if not waiter.done():
                waiter.set_result(None)
        for conn in self.local.get(channel, ()):
            if conn.delivery.subscription_confirmed():
                self.on_gap(conn)

    def _deliver(self, channel: bytes, data: bytes) -> None:
        conns = self.local.get(channel)
        if not conns:
            return
        thread, _, rest = data.partition(b" ")
        event_id, _, frame = rest.partition(b" ")
        text, thread_s = frame.decode(), thread.decode()
        if event_id == b"~":  # typing: ephemeral, dropped rather than closing a socket
            for conn in conns:
                conn.push_droppable(text)
            return
        id_s = event_id.decode()
        for conn in conns:
            conn.live(thread_s, id_s, text)
