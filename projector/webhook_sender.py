"""The webhook sender: POSTs the outbox's rows (protocol.md section 6, docs/webhooks.md).

One per ``duologue projector`` process (``projector.main``), on a thread of its own with
its own event loop and Postgres connections, so nothing it waits for (a slow receiver,
the outbox's locks) touches the batch path. ``Sender.run`` is the supervisor: a session
that crashes is logged and started again.

A session:
- claims due rows (``FOR UPDATE SKIP LOCKED``) and leases them: a claim pushes ``next_at``
  past the POST's timeout (``lease_s``), so another process's sender takes a row only
  once the claim that holds it can no longer be in flight; it claims no more rows than it
  has free slots (``webhook_concurrency`` POSTs in flight), so no lease runs out while a
  row waits its turn;
- POSTs each with httpx (the body exactly as stored, signed with HMAC-SHA256), on a pool
  of ``webhook_concurrency`` threads (httpx's blocking client: a third of the CPU of its
  asyncio one per request, measured); a 2xx
  deletes the row; anything else, or no answer within ``webhook_timeout`` s, schedules
  the next attempt after ``webhook_backoff * 2**(attempts-1)`` s (at most 300 s), and a
  row still failing ``webhook_retry_for`` s after it was enqueued is marked dead;
- wakes on the projector's ``pg_notify`` (LISTEN on a second connection), on each POST's
  end, and at the latest when the next row is due or after ``POLL_S`` s.
Completions are written in batches (one DELETE, one UPDATE per loop turn).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import psycopg
import structlog

from adapters.settings import Settings
from projector.rows import as_json
from projector.webhook_outbox import CHANNEL

log = structlog.get_logger("duologue.webhook")

MAX_DELAY_S = 300.0  # retries are at most 5 minutes apart
POLL_S = 1.0  # the polling fallback: the outbox is read at least this often when idle
LEASE_MARGIN_S = 10.0  # a claim's lease is the POST timeout plus this
STATS_EVERY_S = 10.0  # a "webhook_progress" line at most this often, when anything happened
DELIVERY_HEADER = "Duologue-Delivery"
SIGNATURE_HEADER = "Duologue-Signature"

_CLAIM = (
    "WITH due AS (SELECT id FROM webhook_outbox WHERE dead_at IS NULL AND next_at <= now() "
    "ORDER BY next_at LIMIT %(n)s FOR UPDATE SKIP LOCKED) "
    "UPDATE webhook_outbox o SET next_at = now() + %(lease)s * interval '1 second', "
    "attempts = o.attempts + 1, leased_by = %(me)s FROM due WHERE o.id = due.id "
    "RETURNING o.id, o.body, o.attempts")
_DUE_IN = ("SELECT extract(epoch FROM min(next_at) - now())::float8 FROM webhook_outbox "
           "WHERE dead_at IS NULL")
_DONE = "DELETE FROM webhook_outbox WHERE id = ANY(%s)"
# the next attempt: base * 2^(attempts-1) s, at most MAX_DELAY_S, never after the deadline
# (created_at + retry_for); a row failing at or after its deadline is dead
_FAILED = (
    "UPDATE webhook_outbox o SET last_error = u.e, "
    "dead_at = CASE WHEN now() >= o.created_at + %(retry)s * interval '1 second' "
    "THEN now() END, "
    "next_at = LEAST(now() + LEAST(%(base)s * power(2, LEAST(o.attempts - 1, 30)), %(max)s) "
    "* interval '1 second', o.created_at + %(retry)s * interval '1 second') "
    "FROM json_to_recordset(%(rows)s::json) AS u(i text, e text) "
    "WHERE o.id = u.i AND o.dead_at IS NULL AND o.leased_by = %(me)s "
    "RETURNING o.id, o.attempts, o.dead_at IS NOT NULL, "
    "extract(epoch FROM o.next_at - now())::float8")


def sign(secret: str, body: bytes) -> str:
    """The ``Duologue-Signature`` header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Outcome:
    id: str
    ok: bool
    error: str = ""


@dataclass
class _Counts:
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    since: float = field(default_factory=time.monotonic)


class Sender:
    """Delivers the outbox until ``stop`` is set; restarts its session after a crash."""

    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self.settings = settings
        self.stop = stop
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_s = settings.webhook_timeout + LEASE_MARGIN_S
        self.sessions = 0
        self._counts = _Counts()

    # -- the supervisor -------------------------------------------------------------------
    def run(self) -> None:
        delay = 0.1
        log.info("webhook_sender_started", sender=self.name, url=self.settings.webhook_url,
                 concurrency=self.settings.webhook_concurrency,
                 timeout_s=self.settings.webhook_timeout,
                 retry_for_s=self.settings.webhook_retry_for)
        while not self.stop.is_set():
            started = time.monotonic()
            self.sessions += 1
            try:
                asyncio.run(self._session())
            except Exception as exc:
                if self.stop.is_set():
                    break
                if time.monotonic() - started > 30:
                    delay = 0.1
                log.error("webhook_sender_crashed", sender=self.name,
                          error=f"{type(exc).__name__}: {exc}", restart_in=round(delay, 2),
                          exc_info=not isinstance(exc, psycopg.OperationalError))
                self.stop.wait(delay)
                delay = min(delay * 2, 5.0)
        log.info("webhook_sender_stopped", sender=self.name,
                 delivered=self._counts.delivered, failed=self._counts.failed)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="webhook-sender", daemon=True)
        thread.start()
        return thread

    # -- one session ------------------------------------------------------------------------
    async def _session(self) -> None:
        url = self.settings.database_url
        concurrency = self.settings.webhook_concurrency
        limits = httpx.Limits(max_connections=concurrency,
                              max_keepalive_connections=concurrency)
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="webhook-post")
        self.http = httpx.Client(timeout=httpx.Timeout(self.settings.webhook_timeout),
                                 limits=limits, follow_redirects=False)
        try:
            async with await psycopg.AsyncConnection.connect(
                    url, autocommit=True, connect_timeout=5,
                    application_name="duologue-webhook") as conn, \
                    await psycopg.AsyncConnection.connect(
                        url, autocommit=True, connect_timeout=5,
                        application_name="duologue-webhook-listen") as listening:
                await listening.execute(f"LISTEN {CHANNEL}")
                loop = _Loop(self, conn, pool)
                listener = asyncio.create_task(_listen(listening, loop))
                try:
                    await loop.run(listener)
                finally:
                    listener.cancel()
                    with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                        await listener
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            self.http.close()

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        """One POST (on a pool thread); its status."""
        return self.http.post(self.settings.webhook_url, content=body,
                              headers=headers).status_code

    def counted(self, outcome: Outcome) -> None:
        if outcome.ok:
            self._counts.delivered += 1
        else:
            self._counts.failed += 1

    def progress(self, dead: int) -> None:
        counts = self._counts
        counts.dead += dead
        now = time.monotonic()
        if now - counts.since >= STATS_EVERY_S and (counts.delivered or counts.failed):
            log.info("webhook_progress", sender=self.name, delivered=counts.delivered,
                     failed_attempts=counts.failed, dead=counts.dead,
                     seconds=round(now - counts.since, 1))
            self._counts = _Counts()


async def _listen(conn: psycopg.AsyncConnection, loop: _Loop) -> None:
    """Every NOTIFY on the channel wakes the loop (a commit enqueued rows)."""
    async for _ in conn.notifies():
        loop.notified = True
        loop.wake.set()


class _Loop:
    """Claim, POST (at most ``concurrency`` at once), record, wait; until stopped."""

    def __init__(self, sender: Sender, conn: psycopg.AsyncConnection,
                 pool: ThreadPoolExecutor) -> None:
        self.sender = sender
        self.settings = sender.settings
        self.conn = conn
        self.pool = pool
        self.wake = asyncio.Event()
        self.notified = True  # read the outbox at once
        self.backlog = False  # the last claim filled every free slot: more may be due
        self.next_poll = 0.0
        self.inflight: set[asyncio.Task[None]] = set()
        self.done: list[Outcome] = []

    async def run(self, listener: asyncio.Task[None]) -> None:
        stop = self.sender.stop
        concurrency = self.settings.webhook_concurrency
        try:
            while not stop.is_set():
                self.wake.clear()  # whatever sets it from here on wakes the wait below
                if listener.done():
                    listener.result()  # the LISTEN connection failed: restart the session
                    raise psycopg.OperationalError("the LISTEN connection ended")
                await self._record()
                free = concurrency - len(self.inflight)
                now = time.monotonic()
                if free > 0 and (self.notified or self.backlog or now >= self.next_poll):
                    await self._claim(free)
                    now = time.monotonic()
                if self.done or (self.backlog and len(self.inflight) < concurrency):
                    continue
                wait = min(max(0.0, self.next_poll - now), 0.25)  # 0.25: notice stop
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), wait)
        finally:
            await self._drain()

    async def _claim(self, free: int) -> None:
        self.notified = False
        cur = await self.conn.execute(_CLAIM, {"n": free, "lease": self.sender.lease_s,
                                               "me": self.sender.name})
        rows = await cur.fetchall()
        for delivery, body, attempts in rows:
            task = asyncio.create_task(self._deliver(delivery, body.encode(), attempts))
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)
        self.backlog = len(rows) == free
        if not self.backlog:  # read again when the next row is due (or POLL_S)
            row = await (await self.conn.execute(_DUE_IN)).fetchone()
            due_in = row[0] if row and row[0] is not None else POLL_S
            self.next_poll = time.monotonic() + min(POLL_S, max(0.0, due_in))

    async def _deliver(self, delivery: str, body: bytes, attempt: int) -> None:
        """POST on a thread of the pool (httpx's blocking client costs a third of the CPU
        of its asyncio one per request); the answer counts only within the timeout, and the
        slot stays taken until the thread is free again."""
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: delivery,
                   SIGNATURE_HEADER: sign(self.settings.webhook_secret, body)}
        timeout = self.settings.webhook_timeout
        posted = asyncio.get_running_loop().run_in_executor(
            self.pool, self.sender.post, body, headers)
        try:
            status = await asyncio.wait_for(asyncio.shield(posted), timeout)
            if 200 <= status < 300:
                outcome = Outcome(delivery, True)
            else:
                outcome = Outcome(delivery, False, f"HTTP {status}")
        except TimeoutError:
            outcome = Outcome(delivery, False, f"no answer within {timeout:g} s")
        except httpx.HTTPError as exc:
            outcome = Outcome(delivery, False, f"{type(exc).__name__}: {exc}"[:300])
        if outcome.ok:
            log.debug("webhook_delivered", delivery=delivery, attempt=attempt)
        self.sender.counted(outcome)
        self.done.append(outcome)
        self.wake.set()
        if not posted.done():  # a receiver still trickling its answer: the slot stays taken
            with contextlib.suppress(Exception):
                await posted

    async def _record(self) -> None:
        """Write the outcomes of the POSTs that ended: delete the delivered rows,
        schedule the failed ones (or mark them dead)."""
        if not self.done:
            return
        outcomes, self.done = self.done, []
        delivered = [o.id for o in outcomes if o.ok]
        failed = [{"i": o.id, "e": o.error} for o in outcomes if not o.ok]
        errors = {o.id: o.error for o in outcomes if not o.ok}
        if delivered:
            await self.conn.execute(_DONE, (delivered,))
        dead = 0
        if failed:
            cur = await self.conn.execute(_FAILED, {
                "rows": as_json(failed), "retry": self.settings.webhook_retry_for,
                "base": self.settings.webhook_backoff, "max": MAX_DELAY_S,
                "me": self.sender.name})
            for delivery, attempts, is_dead, next_in in await cur.fetchall():
                if is_dead:
                    dead += 1
                    log.error("webhook_dead", delivery=delivery, attempts=attempts,
                              error=errors.get(delivery),
                              retried_for_s=self.settings.webhook_retry_for)
                else:
                    log.warning("webhook_retry", delivery=delivery, attempt=attempts,
                                error=errors.get(delivery), retry_in_s=round(next_in, 2))
                    self.next_poll = min(self.next_poll, time.monotonic() + max(0.0, next_in))
        self.sender.progress(dead)

    async def _drain(self) -> None:
        """SIGTERM (or a crash): let the POSTs in flight end (within their timeout) and
        record them; a row left unrecorded is retried when its lease ends."""
        if self.inflight:
            await asyncio.wait(set(self.inflight), timeout=self.settings.webhook_timeout + 1)
        with contextlib.suppress(psycopg.Error):
            await self._record()
