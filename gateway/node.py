"""The gateway of one process: Redis, event store, hub, limits; frame dispatch; drain."""

from __future__ import annotations

import asyncio
import time

import structlog

from adapters.logs import clip
from adapters.record import Keys
from adapters.settings import Settings
from domain.commands import SendMessage
from domain.ids import check_participant
from gateway import handlers
from gateway.archive import Archive
from gateway.backfill import schedule_catch_up
from gateway.connection import POLICY, TOO_MANY_REFUSED, Connection
from gateway.errors import REFUSALS, FrameError, RateLimitedError, client_message, code_for
from gateway.hub import Hub
from gateway.metrics import Metrics
from gateway.presence_leases import Leases
from gateway.presence_watch import Watchers
from gateway.protocol import parse
from gateway.pubsub_source import PubSubSource
from gateway.read_model import ReadModel
from gateway.redis_client import connect_redis
from gateway.socket_caps import SocketCaps
from gateway.store import Appended, Budget, EventStore
from schemas.client import (
    Block,
    ClientFrame,
    Delete,
    Edit,
    React,
    Read,
    Refresh,
    Send,
    Sync,
    Typing,
    Unblock,
    Unreact,
    Watch,
)
from schemas.server import HELLO_THREADS, Error, Hello, Limits, ThreadSummary, encode_frame

log = structlog.get_logger("duologue.gateway")
SHUTTING_DOWN = 1001


class Gateway:
    def __init__(self, settings: Settings, metrics: Metrics | None = None,
                 history: ReadModel | None = None) -> None:
        self.settings = settings
        self.metrics = metrics = metrics or Metrics()
        self.keys = Keys(settings.prefix, settings.partitions)
        self.redis = connect_redis(settings.redis_url, settings.redis_pool)
        self.store = EventStore(self.redis, self.keys, settings.dedupe_ttl,
                                Archive(history), observe=metrics.appends.observe,
                                typing_every_ms=int(settings.typing_every * 1000),
                                budget=Budget(settings.rate, settings.burst if settings.rate
                                              else 0, settings.rate_bytes,
                                              4 * settings.rate_bytes),
                                ack_replicas=settings.ack_replicas,
                                ack_wait_ms=settings.ack_wait_ms)
        self.hub = Hub(PubSubSource(self.redis), self.keys.channel,
                       lambda conn: schedule_catch_up(self.store, conn))
        self.leases = Leases(self.redis, settings.prefix, settings.presence_lease_ms)
        self.sockets = SocketCaps(self.redis, self.keys, self.leases.gateway_id,
                                  settings.max_sockets, settings.presence_lease_ms)
        self.watchers = Watchers(self.redis, self.keys, self.hub, settings.presence_lease_ms)
        self.connections: set[Connection] = set()
        self.closing = False
        metrics.ws_connections.set_function(lambda: len(self.connections))

    async def start(self) -> None:
        await self.hub.start()
        await self.leases.start()
        await self.sockets.start()
        await self.watchers.start()

    async def stop(self) -> None:
        await self.watchers.stop()
        await self.leases.stop()  # the drain closed the sockets: their users go offline
        await self.sockets.stop()
        await self.hub.stop()
        await self.redis.aclose()

    def hello(self, conn: Connection, threads: list[tuple[str, str]]) -> str:
        """The hello frame: the newest ``HELLO_THREADS`` threads (``threads`` is newest
        first), and ``more_threads`` when there are more (the client pages the rest with
        ``GET /v1/threads``; the connection still tracks them all)."""
        summaries = [ThreadSummary(thread=t, with_=check_participant(t, conn.user), last_id=last)
                     for t, last in threads[:HELLO_THREADS]]
        limits = Limits(max_body=self.settings.max_body, max_frame=self.settings.max_frame)
        return encode_frame(Hello(user=conn.user, threads=summaries, limits=limits,
                                  more_threads=len(threads) > HELLO_THREADS))

    def read(self, conn: Connection, text: str | None) -> ClientFrame | None:
        """One client frame decoded, or None when it was refused (answered already)."""
        try:
            return parse(text)
        except Exception as exc:
            self._failed(conn, "unparsed", None, exc)
            return None

    async def handle(self, conn: Connection, frame: ClientFrame) -> None:
        """Answer one client frame; refusals become error frames, the socket stays open."""
        kind = str(frame.__struct_config__.tag)  # the frame's `type`
        try:
            await self.dispatch(conn, frame)
        except Exception as exc:
            self._failed(conn, kind, getattr(frame, "client_msg_id", None), exc)
        else:
            self.metrics.command(kind, "ok")

    def _failed(self, conn: Connection, kind: str, ref: str | None, exc: Exception) -> None:
        """A refused frame answered with its error (an unexpected exception re-raised)."""
        code = code_for(exc)
        self.metrics.command(kind, code or "internal")
        if code is None:
            raise exc
        ref = exc.ref if isinstance(exc, FrameError) else ref
        self.refuse(conn, code, client_message(exc, code), ref, exc)

    async def post(self, command: SendMessage) -> Appended:
        """An HTTP send: the budget, rules and idempotency of a WebSocket send."""
        try:
            appended = await handlers.send_message(self.store, command, self.settings.max_body)
        except Exception as exc:
            self.metrics.command("send", code_for(exc) or "internal")
            raise
        self.metrics.command("send", "ok")
        return appended

    async def dispatch(self, conn: Connection, frame: ClientFrame) -> None:
        settings, store = self.settings, self.store
        match frame:
            case Send() | Edit() | Delete() | Read() | React() | Unreact() | Block() | Unblock():
                # the user's budget (commands, body bytes) is taken by the append script
                if isinstance(frame, Send):
                    await handlers.send(store, conn, frame, settings.max_body)
                else:
                    await handlers.change(store, conn, frame, settings.max_body)
            case Sync():
                await store.take_read(conn.user, settings.read_rate, settings.read_burst)
                await handlers.sync(store, conn, frame)
            case Typing():
                await handlers.typing(store, conn, frame)
            case Refresh():
                handlers.refresh(conn, frame, settings.secret)
            case Watch():
                await store.take_read(conn.user, settings.read_rate, settings.read_burst)
                await self.watchers.watch(conn, frame.users)

    def refuse(
        self, conn: Connection, code: str, message: str, ref: str | None, exc: Exception
    ) -> None:
        retry = exc.retry_after_ms if isinstance(exc, RateLimitedError) else None
        error = Error(code=code, message=message, ref=ref)
        if retry is not None:
            error = Error(code=code, message=message, ref=ref, retry_after_ms=retry)
        conn.push(encode_frame(error))
        unlogged = conn.log_refusal()
        if unlogged is None:
            pass  # counted; the connection's next logged refusal says how many
        elif code == "unavailable":  # what Redis or Postgres said, for the operator
            log.warning("frame_unavailable", user=conn.user, ref=clip(ref),
                        error=clip(f"{type(exc).__name__}: {exc}"), unlogged=unlogged)
        else:
            log.info("frame_refused", user=conn.user, code=code, reason=clip(message),
                     ref=clip(ref), unlogged=unlogged)
        if code in REFUSALS and conn.refused():
            conn.close(POLICY, TOO_MANY_REFUSED, flush=True)

    async def drain(self) -> None:
        """SIGTERM: finish in-flight commands, then close every socket with 1001."""
        self.closing = True
        deadline = time.monotonic() + self.settings.drain_timeout
        conns = list(self.connections)
        for conn in conns:
            conn.draining = True
        while any(c.inflight for c in conns) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in conns:
            conn.close(SHUTTING_DOWN, "server shutting down", flush=True)
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        log.info("drained", left=len(self.connections))

