"""The webhook sender: POSTs the outbox's rows (protocol.md section 6, docs/webhooks.md).

Every ``duologue projector`` process runs one, supervised (``projector.webhook_process``:
a child process of its own, so its Python never competes with the batch path for the
GIL, at a lower CPU priority). ``Sender.run`` restarts a session that crashes (logged).

A session is one asyncio loop (uvloop where installed) with its own Postgres connections:
- before it claims, the loop splits the due bundles (the projector's batches, migration
  0006) into a row per notification, in one statement (atomic: a bundle is deleted and
  its rows inserted, due at once, with the bundle's ``created_at``);
- the loop claims due rows (``FOR UPDATE SKIP LOCKED``) and leases them: a claim pushes
  ``next_at`` past the POST's timeout (``lease_s``), so another process's sender takes a
  row only once the claim that holds it can no longer be in flight. It holds at most
  twice as many rows as it has POST tasks (one waiting behind each POST, so a POST task
  never waits for the loop's next turn): a row waits at most one timeout for a task,
  then POSTs within one more, and the lease is two timeouts plus a margin;
- ``webhook_concurrency`` tasks POST through one aiohttp session (keep-alive connections,
  the body exactly as stored, signed with HMAC-SHA256, no redirects followed). Measured
  here (docs/benchmarks.md): 66 us of CPU per POST, against 380-540 us through httpx's
  blocking transport on threads, its cheapest use;
- the loop writes the outcomes in batches: a 2xx deletes the row; anything else, or no
  answer within ``webhook_timeout`` s, schedules the next attempt after
  ``webhook_backoff * 2**(attempts-1)`` s (at most 300 s); a row still failing
  ``webhook_retry_for`` s after it was enqueued is marked dead;
- a listener task (LISTEN on a connection of its own) wakes the loop at each commit
  that enqueued rows; the loop also wakes when a POST ends, when the next row is due,
  and at least every ``POLL_S`` s;
- while its projector is more than ``YIELD_LAG_S`` behind (``Supervisor.lag``: a backlog,
  after a restart or a burst), the loop claims only once per ``TRICKLE_S``: the projection
  comes first (protocol.md section 6: deliveries never slow it), and on a busy machine the
  sender's POSTs and outbox queries would take its CPU. Caught up, it claims at once.
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
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import psycopg
import structlog

from adapters.settings import Settings
from projector.rows import as_json
from projector.webhook_outbox import CHANNEL

log = structlog.get_logger("duologue.webhook")

MAX_DELAY_S = 300.0  # retries are at most 5 minutes apart
POLL_S = 1.0  # the polling fallback: the outbox is read at least this often when idle
LEASE_MARGIN_S = 10.0  # a claim's lease is twice the POST timeout plus this
TURN_S = 0.005  # the loop turns at most this often: outcomes are written in batches
STOP_CHECK_S = 0.25  # the loop looks at the stop flag at least this often
YIELD_LAG_S = 1.0  # claims are held while the projector is further behind than this ...
TRICKLE_S = 1.0  # ... but for one claim this often, so that deliveries never stop
STATS_EVERY_S = 10.0  # a "webhook_progress" line at most this often, when anything happened
DELIVERY_HEADER = "Duologue-Delivery"
SIGNATURE_HEADER = "Duologue-Signature"
USER_AGENT = "Duologue-Webhook/1"

_CLAIM = (
    "WITH due AS (SELECT seq FROM webhook_outbox WHERE dead_at IS NULL AND next_at <= now() "
    "AND deliveries = 1 ORDER BY next_at LIMIT %(n)s FOR UPDATE SKIP LOCKED) "
    "UPDATE webhook_outbox o SET next_at = now() + %(lease)s * interval '1 second', "
    "attempts = o.attempts + 1, leased_by = %(me)s FROM due WHERE o.seq = due.seq "
    "RETURNING o.seq, o.id, o.body, o.attempts")
# due bundles (oldest first, SPLIT_BUNDLES at most) replaced by their notifications' rows;
# a bundle another sender is splitting is skipped (its statement commits or rolls back whole)
SPLIT_BUNDLES = 8
_SPLIT = (
    "WITH b AS (DELETE FROM webhook_outbox WHERE seq IN (SELECT seq FROM webhook_outbox "
    "WHERE deliveries > 1 AND dead_at IS NULL AND next_at <= now() ORDER BY seq "
    f"LIMIT {SPLIT_BUNDLES} FOR UPDATE SKIP LOCKED) RETURNING body, created_at) "
    "INSERT INTO webhook_outbox (id, body, created_at) "
    "SELECT n->>'id', n::text, b.created_at FROM b, json_array_elements(b.body::json) AS n")
_DUE_IN = ("SELECT extract(epoch FROM min(next_at) - now())::float8 FROM webhook_outbox "
           "WHERE dead_at IS NULL")
_DONE = "DELETE FROM webhook_outbox WHERE seq = ANY(%s)"
# the next attempt: base * 2^(attempts-1) s, at most MAX_DELAY_S, never after the deadline
# (created_at + retry_for); a row failing at or after its deadline is dead
_FAILED = (
    "UPDATE webhook_outbox o SET last_error = u.e, "
    "dead_at = CASE WHEN now() >= o.created_at + %(retry)s * interval '1 second' "
    "THEN now() END, "
    "next_at = LEAST(now() + LEAST(%(base)s * power(2, LEAST(o.attempts - 1, 30)), %(max)s) "
    "* interval '1 second', o.created_at + %(retry)s * interval '1 second') "
    "FROM json_to_recordset(%(rows)s::json) AS u(s int8, e text) "
    "WHERE o.seq = u.s AND o.dead_at IS NULL AND o.leased_by = %(me)s "
    "RETURNING o.id, o.attempts, o.dead_at IS NOT NULL, "
    "extract(epoch FROM o.next_at - now())::float8")


def sign(secret: str, body: bytes) -> str:
    """The ``Duologue-Signature`` header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Outcome:
    seq: int  # the outbox row
    id: str
    ok: bool
    error: str = ""


@dataclass
class _Counts:
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    held: float = 0.0  # seconds claims were held while the projector caught up
    since: float = field(default_factory=time.monotonic)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (it comes with uvicorn[standard]): a POST costs
    a third less CPU on it than on asyncio's own loop, measured here."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return None
    return uvloop.new_event_loop


class Sender:
    """Delivers the outbox until ``stop`` is set; restarts its session after a crash."""

    def __init__(self, settings: Settings, stop: threading.Event,
                 lag: Callable[[], float] = lambda: 0.0) -> None:
        self.settings = settings
        self.stop = stop
        self.lag = lag  # seconds the projector is behind (``Supervisor.lag``)
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_s = 2 * settings.webhook_timeout + LEASE_MARGIN_S
        self.counts = _Counts()

    def run(self) -> None:
        log.info("webhook_sender_started", sender=self.name, url=self.settings.webhook_url,
                 concurrency=self.settings.webhook_concurrency,
                 timeout_s=self.settings.webhook_timeout,
                 retry_for_s=self.settings.webhook_retry_for)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(self._sessions())
        log.info("webhook_sender_stopped", sender=self.name,
                 delivered=self.counts.delivered, failed_attempts=self.counts.failed)

    async def _sessions(self) -> None:
        delay = 0.1
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                async with _Session(self) as session:
                    await session.run()
            except Exception as exc:
                if self.stop.is_set():
                    break
                if time.monotonic() - started > 30:
                    delay = 0.1
                log.error("webhook_sender_crashed", sender=self.name,
                          error=f"{type(exc).__name__}: {exc}", restart_in=round(delay, 2),
                          exc_info=not isinstance(exc, psycopg.OperationalError))
                await self._pause(delay)
                delay = min(delay * 2, 5.0)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when ``stop`` is set meanwhile."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, STOP_CHECK_S))

    def progress(self, delivered: int, failed: int, dead: int, held: float = 0.0) -> None:
        counts = self.counts
        counts.delivered += delivered
        counts.failed += failed
        counts.dead += dead
        counts.held += held
        now = time.monotonic()
        if now - counts.since >= STATS_EVERY_S and (
                counts.delivered or counts.failed or counts.held):
            log.info("webhook_progress", sender=self.name, delivered=counts.delivered,
                     failed_attempts=counts.failed, dead=counts.dead,
                     held_for_projector_s=round(counts.held, 1),
                     seconds=round(now - counts.since, 1))
            self.counts = _Counts()


async def _connect(url: str, name: str) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=5,
                                                 application_name=name)


class _Session:
    """Connections, POST tasks and the listener of one session (see the module doc)."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.settings = sender.settings
        self.wake = asyncio.Event()
        self.notified = True  # read the outbox at once
        self.backlog = False  # the last claim filled every idle task: more may be due
        self.next_poll = 0.0
        self.claimed_at = 0.0  # the last turn that claimed (monotonic)
        self.split = False  # the last turn split a bundle
        self.busy = 0  # rows claimed whose POST's end is not recorded yet
        self.work: asyncio.Queue[tuple[int, str, bytes]] = asyncio.Queue()
        self.done: list[Outcome] = []
        self.failure: BaseException | None = None  # the listener's, raised by the loop
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> _Session:
        url = self.settings.database_url
        self.conn = await _connect(url, "duologue-webhook")
        try:
            self.listening = await _connect(url, "duologue-webhook-listen")
            await self.listening.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            await self.conn.close()
            raise
        concurrency = self.settings.webhook_concurrency
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout),
            headers={"User-Agent": USER_AGENT})
        self.tasks = [asyncio.create_task(self._listen(), name="webhook-listen")]
        self.tasks += [asyncio.create_task(self._post_loop(), name=f"webhook-post-{n}")
                       for n in range(concurrency)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.http.close()
        await self.conn.close()
        await self.listening.close()

    # -- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        stop = self.sender.stop
        held = 2 * self.settings.webhook_concurrency  # rows in flight or waiting for a task
        turn = 0.0
        try:
            while not stop.is_set():
                self.wake.clear()  # whatever sets it from here on ends the wait below
                if self.failure is not None:
                    raise self.failure
                free = held - self.busy + len(self.done)
                now = time.monotonic()
                claim = free > 0 and (self.notified or self.backlog or now >= self.next_poll)
                holding = claim and self._holding(now)
                await self._turn(free if claim and not holding else 0)
                now = time.monotonic()
                if holding:  # look again soon: caught up, the projector's rows go out at once
                    await asyncio.sleep(TURN_S * 4)
                    self.sender.progress(0, 0, 0, time.monotonic() - now)
                elif not (self.done or (self.backlog and self.busy < held)):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), min(
                            max(0.0, self.next_poll - now), STOP_CHECK_S))
                # let the POSTs ending meanwhile join the next turn's batch (a few ms at most)
                await asyncio.sleep(max(0.0, turn + TURN_S - time.monotonic()))
                turn = time.monotonic()
        finally:
            await self._drain()

    def _holding(self, now: float) -> bool:
        """Hold this claim: the projector is behind (see the module doc)?"""
        return self.sender.lag() > YIELD_LAG_S and now - self.claimed_at < TRICKLE_S

    async def _turn(self, claim: int) -> None:
        """One round trip (pipeline mode): write the outcomes of the POSTs that ended (a
        2xx deletes the row; a failure schedules the next attempt or marks the row dead),
        then claim up to ``claim`` due rows and hand them to the POST tasks."""
        outcomes, self.done = self.done, []
        self.busy -= len(outcomes)
        delivered = [o.seq for o in outcomes if o.ok]
        failures = [{"s": o.seq, "e": o.error} for o in outcomes if not o.ok]
        errors = {o.id: o.error for o in outcomes if not o.ok}
        if not (delivered or errors or claim):
            return
        if claim:
            self.notified = False
            self.claimed_at = time.monotonic()
        conn = self.conn
        async with conn.pipeline():
            if delivered:
                await conn.execute(_DONE, (delivered,))
            failed = await conn.execute(_FAILED, {
                "rows": as_json(failures),
                "retry": self.settings.webhook_retry_for, "base": self.settings.webhook_backoff,
                "max": MAX_DELAY_S, "me": self.sender.name}) if errors else None
            split = await conn.execute(_SPLIT) if claim else None
            claimed = await conn.execute(_CLAIM, {
                "n": claim, "lease": self.sender.lease_s, "me": self.sender.name}
            ) if claim else None
        dead = self._log_failures(await failed.fetchall(), errors) if failed is not None else 0
        self.sender.progress(len(delivered), len(errors), dead)
        if claimed is not None:
            # a bundle split: more bundles may be due (the next turn splits one more)
            self.split = split is not None and split.rowcount > 0
            await self._hand_out(await claimed.fetchall(), claim)

    async def _hand_out(self, rows: list[tuple[int, str, str, int]], asked: int) -> None:
        self.busy += len(rows)
        for seq, delivery, body, _attempts in rows:
            self.work.put_nowait((seq, delivery, body.encode()))
        self.backlog = len(rows) == asked or self.split
        if not rows and not self.split:  # read again when the next row is due (or after POLL_S)
            row = await (await self.conn.execute(_DUE_IN)).fetchone()
            due_in = row[0] if row and row[0] is not None else POLL_S
            self.next_poll = time.monotonic() + min(POLL_S, max(0.0, due_in))
        elif not self.backlog:  # all due rows taken; our own retries set next_poll
            self.next_poll = time.monotonic() + POLL_S

    def _log_failures(self, rows: list[tuple[str, int, bool, float]],
                      errors: dict[str, str]) -> int:
        dead = 0
        for delivery, attempts, is_dead, next_in in rows:
            if is_dead:
                dead += 1
                log.error("webhook_dead", delivery=delivery, attempts=attempts,
                          error=errors.get(delivery),
                          retried_for_s=self.settings.webhook_retry_for)
            else:
                log.warning("webhook_retry", delivery=delivery, attempt=attempts,
                            error=errors.get(delivery), retry_in_s=round(next_in, 2))
                self.next_poll = min(self.next_poll, time.monotonic() + max(0.0, next_in))
        return dead

    async def _drain(self) -> None:
        """SIGTERM (or a crash): let the POSTs in flight end (each within its timeout) and
        record them; a row left unrecorded is retried when its lease ends."""
        deadline = time.monotonic() + self.settings.webhook_timeout + 1
        while self.busy > len(self.done) and time.monotonic() < deadline:
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 0.05)
        try:
            await self._turn(0)
        except psycopg.Error as exc:
            log.warning("webhook_unrecorded", error=str(exc))

    # -- the other tasks ------------------------------------------------------------------
    async def _post_loop(self) -> None:
        secret, url = self.settings.webhook_secret, self.settings.webhook_url
        timeout = self.settings.webhook_timeout
        while True:
            seq, delivery, body = await self.work.get()
            headers = {"Content-Type": "application/json", DELIVERY_HEADER: delivery,
                       SIGNATURE_HEADER: sign(secret, body)}
            try:
                async with self.http.post(url, data=body, headers=headers,
                                          allow_redirects=False) as response:
                    await response.read()
                    status = response.status
                outcome = (Outcome(seq, delivery, True) if 200 <= status < 300
                           else Outcome(seq, delivery, False, f"HTTP {status}"))
            except TimeoutError:
                outcome = Outcome(seq, delivery, False, f"no answer within {timeout:g} s")
            except Exception as exc:  # any failure of one POST is that delivery's failure
                outcome = Outcome(seq, delivery, False, f"{type(exc).__name__}: {exc}"[:300])
            self.done.append(outcome)
            self.wake.set()

    async def _listen(self) -> None:
        """Every NOTIFY on the channel wakes the loop (a commit enqueued rows)."""
        try:
            async for _ in self.listening.notifies():
                self.notified = True
                self.wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failure = exc  # the loop raises it: the session restarts
            self.wake.set()
