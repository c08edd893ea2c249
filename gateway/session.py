"""The WebSocket endpoint: authenticate, hello, then a receiver and a sender."""

from __future__ import annotations

import asyncio
import time

import structlog
from redis.exceptions import RedisClusterException, RedisError
from starlette.responses import Response
from starlette.websockets import WebSocket

from adapters.logs import clip
from adapters.tokens import AuthError, Identity, bearer, claimed_user, read_token
from gateway.backfill import schedule_catch_up
from gateway.connection import POLICY, TOO_MANY_REFUSED, Connection
from gateway.errors import RateLimitedError, UnavailableError
from gateway.http_errors import error_response
from gateway.log_throttle import LogThrottle
from gateway.node import SHUTTING_DOWN, Gateway
from gateway.ws_protocol import TEXT_FRAMES, FrameWriter
from schemas.client import ClientFrame, Send
from schemas.server import Error, encode_frame

log = structlog.get_logger("duologue.ws")
INTERNAL = 1011
TURN = 0.0002  # seconds a connection's frames may run before the loop serves the others
OVERLAPPING = 16  # sends of one connection under way at once (its next frames wait)
REFUSED = LogThrottle()  # refused handshakes: a line a second per user (or address)
UPGRADE, ENDPOINT = "upgrade", "endpoint"  # where a handshake was refused (metrics)


async def websocket_endpoint(ws: WebSocket) -> None:
    if TEXT_FRAMES not in ws.scope.get("extensions", {}):
        # a connection's queue is written by our protocol's writer (gateway.ws_protocol),
        # which ``duologue gateway`` runs; another ASGI server has none
        log.error("ws_refused", reason="not served by duologue's WebSocket protocol: "
                  "run `duologue gateway`", client=_client(ws))
        await ws.close(INTERNAL)
        return
    gateway: Gateway = ws.app.state.gateway
    token = bearer(ws.headers.get("authorization")) or ws.query_params.get("token", "")
    try:
        identity = read_token(token, gateway.settings.secret)
    except AuthError as exc:
        client = _client(ws)
        gateway.metrics.ws_refused.labels("token", ENDPOINT).inc()
        _refused(client.rpartition(":")[0], reason=clip(str(exc)), client=client)
        await ws.close(1008)  # before accept: the handshake is refused with HTTP 403
        return
    settings = gateway.settings
    try:  # the hello reads the user's threads: a read (protocol.md section 8)
        await gateway.store.take_read(identity.user, settings.read_rate, settings.read_burst)
    except RateLimitedError as exc:
        await _deny(ws, _reads_refused(gateway, identity.user, _client(ws), exc, ENDPOINT))
        return
    except (RedisError, RedisClusterException, OSError):
        pass  # the hello after it needs Redis too, and answers for it
    if not await gateway.sockets.admit(identity.user):
        await _deny(ws, _too_many_sockets(gateway, identity.user, _client(ws), ENDPOINT))
        return
    broke_protocol = False
    try:
        broke_protocol = await _accepted(gateway, ws, identity)
    finally:  # the place of a socket closed for breaking the protocol is held a while
        gateway.sockets.release(identity.user,
                                settings.violation_hold if broke_protocol else 0.0)


def refused_before_upgrade(gateway: Gateway, token: str, client: str) -> Response | None:
    """The endpoint's 429 for a user whose read budget this process knows is spent, or
    whose every socket place this process holds, decided from the token alone (no Redis),
    so that the upgrade is answered while still an HTTP request
    (``gateway.upgrade_screen``); None: the upgrade goes on to the endpoint."""
    claimed = claimed_user(token)  # not verified yet: worth verifying only if refused
    if claimed is None:
        return None
    refused_ms = gateway.store.reads_refused_ms(claimed)
    if not refused_ms and not gateway.sockets.full(claimed):
        return None
    try:
        user = read_token(token, gateway.settings.secret).user  # the claimed one, verified
    except AuthError:
        return None  # the endpoint refuses it, and says why
    if refused_ms:
        return _reads_refused(gateway, user, client, RateLimitedError(refused_ms), UPGRADE)
    return _too_many_sockets(gateway, user, client, UPGRADE)


def _reads_refused(gateway: Gateway, user: str, client: str, exc: RateLimitedError,
                   where: str) -> Response:
    gateway.metrics.ws_refused.labels("read_budget", where).inc()
    _refused(user, reason="read budget spent", user=user, client=client,
             retry_after_ms=exc.retry_after_ms)
    return error_response("rate_limited", str(exc),
                          {"Retry-After": str(-(-exc.retry_after_ms // 1000))})


def _too_many_sockets(gateway: Gateway, user: str, client: str, where: str) -> Response:
    gateway.metrics.ws_refused.labels("max_sockets", where).inc()
    maximum = gateway.settings.max_sockets
    _refused(user, reason="too many sockets", user=user, client=client, max_sockets=maximum)
    return error_response("rate_limited", f"at most {maximum} open WebSockets per user",
                          {"Retry-After": "1"})


def _refused(key: str, **fields: object) -> None:
    """A refused handshake's ``ws_refused`` line: one a second per ``key`` (a user, or a
    client address), each saying how many were refused unlogged since the last."""
    if (unlogged := REFUSED.take(key)) is not None:
        log.info("ws_refused", **fields, unlogged=unlogged)


async def _deny(ws: WebSocket, answer: Response) -> None:
    """``answer`` (HTTP 429) instead of the upgrade (protocol.md section 8)."""
    try:
        await ws.send_denial_response(answer)
    except RuntimeError:  # a server without the denial extension: 403 is all it can say
        await ws.close(1008)


async def _accepted(gateway: Gateway, ws: WebSocket, identity: Identity) -> bool:
    """Serve an admitted socket to its end; whether it was closed for breaking the
    protocol (a frame the WebSocket parser refused, e.g. over the size limit: 1009; or
    too many refused frames: 1008)."""
    await ws.accept()
    writer: FrameWriter = ws.scope["extensions"][TEXT_FRAMES]["writer"]
    # Read (the token) and answered: nothing reads the upgrade's headers again, and an
    # idle socket would keep them (~1.2 KiB) for its whole life. Whatever a later change
    # needs of them must be read before this line: ``ws.headers`` is empty after it.
    ws.scope["headers"].clear()
    conn = Connection(identity.user, gateway.settings.outbox)
    started = time.monotonic()
    gateway.connections.add(conn)
    try:
        await _serve(gateway, ws, conn, identity)
    finally:
        gateway.connections.discard(conn)
        conn.cleanup()
        gateway.leases.left(conn.user, conn)  # the user's last socket here: offline
        await gateway.watchers.forget(conn)
        await gateway.hub.detach(conn)
        log.info("ws_closed", user=conn.user, client=_client(ws), code=conn.close_code,
                 reason=conn.close_reason, seconds=round(time.monotonic() - started, 3),
                 frames_in=conn.received, frames_out=conn.delivered)
    return writer.broke_protocol or (conn.close_code == POLICY
                                     and conn.close_reason == TOO_MANY_REFUSED)


async def _serve(gateway: Gateway, ws: WebSocket, conn: Connection, identity: Identity) -> None:
    if gateway.closing:
        conn.close(SHUTTING_DOWN, "server shutting down")
        await ws.close(SHUTTING_DOWN, "server shutting down")
        return
    try:
        await gateway.hub.attach(conn)
        threads = await gateway.store.threads(conn.user)
    except (RedisError, RedisClusterException, OSError, TimeoutError,
            UnavailableError) as exc:  # fenced after a restart too
        log.warning("hello_unavailable", user=conn.user,
                    error=clip(f"{type(exc).__name__}: {exc}"))
        conn.close(INTERNAL, "unavailable")
        await ws.close(INTERNAL, "unavailable")
        return
    conn.push(gateway.hello(conn, threads))
    gateway.leases.joined(conn.user, conn)  # the user's first socket here: online
    if conn.start(threads):
        schedule_catch_up(gateway.store, conn)
    conn.expire_at(identity.exp)
    conn.attach(ws.scope["extensions"][TEXT_FRAMES]["writer"])  # flushes the queue
    try:
        await _receive(gateway, ws, conn)
    finally:
        conn.detach()


async def _receive(gateway: Gateway, ws: WebSocket, conn: Connection) -> None:
    held = 0.0  # seconds this connection has run since the loop last served the others
    overlapping: set[asyncio.Task[None]] | None = None  # sends whose append is under way
    # (made at the connection's first send: a socket that never sends keeps none)
    try:
        while True:
            if held > TURN:
                # Frames already read answer without waiting (a refusal, a dropped typing
                # notice), so a client writing them back to back would hold the loop for as
                # long as it likes: the other connections get their turn first.
                await asyncio.sleep(0)
                held = 0.0
            began = time.perf_counter()
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                conn.closed_by_client(message.get("code", 1000))
                return
            conn.received += 1
            if conn.draining or conn.close_code is not None:
                continue  # not acked: the client resends after reconnecting
            frame = _read(gateway, conn, message.get("text"))
            if frame is None:
                pass  # refused, or the connection is closing
            elif overlaps(frame):
                conn.inflight += 1  # from now: a drain waits for it
                if overlapping is None:
                    overlapping = set()
                elif len(overlapping) >= OVERLAPPING:  # a full window: read no more frames
                    await asyncio.wait(overlapping, return_when=asyncio.FIRST_COMPLETED)
                if _given_up(conn):
                    continue
                task = asyncio.create_task(_handle(gateway, conn, frame))
                overlapping.add(task)
                task.add_done_callback(overlapping.discard)
            else:
                conn.inflight += 1
                if overlapping:  # every earlier command answered first, as one at a time
                    await asyncio.wait(overlapping)
                if _given_up(conn):
                    continue
                await _handle(gateway, conn, frame)
            took = time.perf_counter() - began
            # longer than a turn: it waited (for the frame, or for Redis), and others ran
            held = 0.0 if took > TURN else held + took
    finally:
        if overlapping:  # their acks (the client went away: the appends stand, unacked)
            await asyncio.wait(overlapping)


def overlaps(frame: ClientFrame) -> bool:
    """Whether a frame may be handled while the connection's next frames are read: a
    ``send`` without ``reply_to``. Its way to the append batch has no wait of its own
    (on a cluster, the send budget's batch first, answered in order), so the sends of one
    connection are appended in the order they came, as when each waited for the last;
    they are decided on no state they read (the append script checks the block), so
    nothing they decide on can change between them. Every other frame (a reply, which may
    ask the archive first; a command that loads the thread state) waits for the sends
    before it, then runs alone (docs/protocol-notes.md, "Commands of one connection")."""
    return isinstance(frame, Send) and frame.reply_to is None


def _read(gateway: Gateway, conn: Connection, text: str | None) -> ClientFrame | None:
    """The frame decoded (None when refused); an unexpected failure as in ``_handle``."""
    try:
        return gateway.read(conn, text)
    except Exception:
        _internal_error(conn)
        return None


def _given_up(conn: Connection) -> bool:
    """After a wait for the sends before it: a frame the connection no longer takes (a
    drain began, or the connection is closing) is dropped uncounted, unanswered, as a
    frame read then is (the client resends after reconnecting)."""
    if conn.draining or conn.close_code is not None:
        conn.inflight -= 1
        return True
    return False


def _internal_error(conn: Connection) -> None:
    """An unexpected failure: logged, answered ``internal``, the connection closed."""
    log.exception("frame_failed", user=conn.user)
    conn.push(encode_frame(Error(code="internal", message="internal error")))
    conn.close(INTERNAL, "internal error", flush=True)


async def _handle(gateway: Gateway, conn: Connection, frame: ClientFrame) -> None:
    """Answer one frame counted in ``conn.inflight`` (uncounted when done)."""
    try:
        await gateway.handle(conn, frame)
    except Exception:
        _internal_error(conn)
    finally:
        conn.inflight -= 1


def _client(ws: WebSocket) -> str:
    return f"{ws.client.host}:{ws.client.port}" if ws.client else "-"
