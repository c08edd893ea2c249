"""Helpers for the webhook tests: a real HTTP receiver, sends through the real append
script, presence records written in their documented format (adapters/presence.py).

``Receiver`` is a threaded ``http.server`` on 127.0.0.1 that records every request
(arrival and end times, headers, raw body) and answers what ``plan`` says for the n-th
request of a delivery id: a status and a delay before answering (``HANG``: never, until
the receiver closes).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg

from adapters import presence
from adapters.record import Keys
from adapters.redis_connect import SyncRedis, async_redis
from gateway.store import EventStore
from schemas.events import MessageSent
from tests.support import uid

SECRET = "webhook-test-secret"
HANG = float("inf")
Plan = Callable[[str, int], tuple[int, float]]  # (delivery id, attempt from 1) -> answer


@dataclass
class Request:
    delivery: str
    attempt: int
    started: float
    ended: float
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    plan: Plan = lambda _id, _n: (200, 0.0)
    requests: list[Request] = field(default_factory=list)
    closing: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                started = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                delivery = self.headers.get("Duologue-Delivery", "")
                with receiver._lock:
                    attempt = receiver._counts[delivery] = receiver._counts.get(delivery, 0) + 1
                status, delay = receiver.plan(delivery, attempt)
                if delay:
                    receiver.closing.wait(None if delay == HANG else delay)
                if receiver.closing.is_set() and delay == HANG:
                    return
                try:
                    self.send_response(status)
                    answer = b"" if status in (204, 304) else b"ok"  # they have no body
                    if answer:
                        self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:  # the sender gave up first
                    status = 0
                with receiver._lock:
                    receiver.requests.append(Request(delivery, attempt, started, time.time(),
                                                     dict(self.headers), body, status))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def attempts(self, delivery: str) -> list[Request]:
        with self._lock:
            return sorted((r for r in self.requests if r.delivery == delivery),
                          key=lambda r: r.started)

    def arrived(self, delivery: str) -> int:
        """Requests for ``delivery`` received so far (answered or not yet)."""
        with self._lock:
            return self._counts.get(delivery, 0)

    def total(self) -> int:
        """Requests received so far, every delivery id (answered or not yet)."""
        with self._lock:
            return sum(self._counts.values())

    def delivered(self) -> set[str]:
        with self._lock:
            return {r.delivery for r in self.requests if 200 <= r.status < 300}

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


def webhook_env(receiver: Receiver, **more: str) -> dict[str, str]:
    return {"DUOLOGUE_WEBHOOK_URL": receiver.url, "DUOLOGUE_WEBHOOK_SECRET": SECRET,
            "DUOLOGUE_WEBHOOK_TIMEOUT": "1", "DUOLOGUE_WEBHOOK_BACKOFF": "0.2", **more}


def verify(secret: str, body: bytes, header: str) -> bool:
    """What docs/webhooks.md tells receivers to do."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


async def send(redis_url: str, keys: Keys, thread: str, sender: str, body: str,
               reply_to: str | None = None) -> str:
    """A MessageSent appended with the real append script; its event id."""
    client = async_redis(redis_url)
    try:
        store = EventStore(client, keys, 86400)
        cmid = uid("c")
        appended = await store.append(thread, sender, cmid, MessageSent(
            sender=sender, body=body, client_msg_id=cmid, reply_to=reply_to))
        return appended.id
    finally:
        await client.aclose()


async def send_many(redis_url: str, keys: Keys, sends: list[tuple[str, str, str]]
                    ) -> list[str]:
    """(thread, sender, body) appended concurrently; their event ids, in order."""
    client = async_redis(redis_url)
    try:
        store = EventStore(client, keys, 86400)

        async def one(thread: str, sender: str, body: str) -> str:
            cmid = uid("c")
            appended = await store.append(thread, sender, cmid, MessageSent(
                sender=sender, body=body, client_msg_id=cmid))
            return appended.id

        return list(await asyncio.gather(*(one(*s) for s in sends)))
    finally:
        await client.aclose()


def online(client: SyncRedis, prefix: str, user: str, age_ms: int = 0) -> None:
    """A gateway's presence lease for ``user``, renewed ``age_ms`` ago (Redis time)."""
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    client.hset(presence.key(prefix, user), f"gw-{uid('g')}", str(now_ms - age_ms))


def outbox(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    """(id, attempts, dead) of every notification in the outbox, a bundle's (a projector
    batch's row, not yet split by a sender) one by one."""
    return conn.execute(
        "SELECT id, attempts, dead_at IS NOT NULL FROM webhook_outbox WHERE deliveries = 1 "
        "UNION ALL SELECT n->>'id', o.attempts, o.dead_at IS NOT NULL FROM webhook_outbox o, "
        "json_array_elements(o.body::json) AS n WHERE o.deliveries > 1 ORDER BY 1").fetchall()


def projected(conn: psycopg.Connection, thread: str, event_id: str) -> bool:
    row = conn.execute("SELECT 1 FROM messages WHERE thread = %s AND id = %s",
                       (thread, event_id)).fetchone()
    return row is not None


def wait_until(check: Callable[[], Any], timeout: float, what: str,
               every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(every)
