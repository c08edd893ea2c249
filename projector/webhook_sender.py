"""The webhook sender: POSTs the outbox's rows (protocol.md section 6, docs/webhooks.md).

Every ``duologue projector`` process runs one, supervised (``projector.webhook_process``:
a child process of its own, so its Python never competes with the batch path for the
GIL, at a lower CPU priority). ``Sender.run`` restarts a session that crashes (logged).

A session, all threads, its own Postgres connections:
- the loop claims due rows (``FOR UPDATE SKIP LOCKED``) and leases them: a claim pushes
  ``next_at`` past the POST's timeout (``lease_s``), so another process's sender takes a
  row only once the claim that holds it can no longer be in flight. It holds at most
  twice as many rows as it has POST threads (one waiting behind each POST, so the threads
  never wait for the loop's next turn): a row waits at most one timeout for a thread,
  then POSTs within one more, and the lease is two timeouts plus a margin;
- ``webhook_concurrency`` threads POST (httpx's blocking client, the body exactly as
  stored, signed with HMAC-SHA256); measured here it costs a third of the CPU per request
  of its asyncio client;
- the loop writes the outcomes in batches: a 2xx deletes the row; anything else, or no
  answer within ``webhook_timeout`` s, schedules the next attempt after
  ``webhook_backoff * 2**(attempts-1)`` s (at most 300 s); a row still failing
  ``webhook_retry_for`` s after it was enqueued is marked dead;
- a listener thread (LISTEN on a connection of its own) wakes the loop at each commit
  that enqueued rows; the loop also wakes when a POST ends, when the next row is due,
  and at least every ``POLL_S`` s.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import queue
import socket
import threading
import time
import uuid
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
LEASE_MARGIN_S = 10.0  # a claim's lease is twice the POST timeout plus this
TURN_S = 0.005  # the loop turns at most this often: outcomes are written in batches
STATS_EVERY_S = 10.0  # a "webhook_progress" line at most this often, when anything happened
DELIVERY_HEADER = "Duologue-Delivery"
SIGNATURE_HEADER = "Duologue-Signature"

_CLAIM = (
    "WITH due AS (SELECT seq FROM webhook_outbox WHERE dead_at IS NULL AND next_at <= now() "
    "ORDER BY next_at LIMIT %(n)s FOR UPDATE SKIP LOCKED) "
    "UPDATE webhook_outbox o SET next_at = now() + %(lease)s * interval '1 second', "
    "attempts = o.attempts + 1, leased_by = %(me)s FROM due WHERE o.seq = due.seq "
    "RETURNING o.seq, o.id, o.body, o.attempts")
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
    since: float = field(default_factory=time.monotonic)


class Sender:
    """Delivers the outbox until ``stop`` is set; restarts its session after a crash."""

    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self.settings = settings
        self.stop = stop
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_s = 2 * settings.webhook_timeout + LEASE_MARGIN_S
        self.counts = _Counts()

    def run(self) -> None:
        delay = 0.1
        log.info("webhook_sender_started", sender=self.name, url=self.settings.webhook_url,
                 concurrency=self.settings.webhook_concurrency,
                 timeout_s=self.settings.webhook_timeout,
                 retry_for_s=self.settings.webhook_retry_for)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                with _Session(self) as session:
                    session.run()
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
                 delivered=self.counts.delivered, failed_attempts=self.counts.failed)

    def progress(self, delivered: int, failed: int, dead: int) -> None:
        counts = self.counts
        counts.delivered += delivered
        counts.failed += failed
        counts.dead += dead
        now = time.monotonic()
        if now - counts.since >= STATS_EVERY_S and (counts.delivered or counts.failed):
            log.info("webhook_progress", sender=self.name, delivered=counts.delivered,
                     failed_attempts=counts.failed, dead=counts.dead,
                     seconds=round(now - counts.since, 1))
            self.counts = _Counts()


def _connect(url: str, name: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, connect_timeout=5, application_name=name)


class _Session:
    """Connections, POST threads and the listener of one session (see the module doc)."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.settings = sender.settings
        self.wake = threading.Event()
        self.over = threading.Event()  # the session ends: threads exit
        self.notified = True  # read the outbox at once
        self.backlog = False  # the last claim filled every idle thread: more may be due
        self.next_poll = 0.0
        self.busy = 0  # rows claimed whose POST's end is not recorded yet
        self.work: queue.SimpleQueue[tuple[int, str, bytes] | None] = queue.SimpleQueue()
        self.done: list[Outcome] = []
        self.failure: BaseException | None = None  # the listener's, raised by the loop
        self.lock = threading.Lock()

    def __enter__(self) -> _Session:
        url = self.settings.database_url
        self.conn = _connect(url, "duologue-webhook")
        try:
            self.listening = _connect(url, "duologue-webhook-listen")
            self.listening.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            self.conn.close()
            raise
        concurrency = self.settings.webhook_concurrency
        # Each POST thread has its own httpx transport holding one keep-alive connection:
        # with one shared pool, its lock and its scan of every idle connection took a
        # fifth of the sender's samples. The transport without the Client around it (no
        # redirects, cookies, auth or hooks to run): 0.22 ms of CPU per POST here against
        # 0.34 ms through Client.post.
        self.transports = [httpx.HTTPTransport(limits=httpx.Limits(
            max_connections=1, max_keepalive_connections=1)) for _ in range(concurrency)]
        self.threads = [threading.Thread(target=self._listen, name="webhook-listen",
                                         daemon=True)]
        self.threads += [threading.Thread(target=self._post_loop, args=(transport,),
                                          name=f"webhook-post-{n}", daemon=True)
                         for n, transport in enumerate(self.transports)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.over.set()
        for _ in range(self.settings.webhook_concurrency):
            self.work.put(None)
        self.conn.close()
        self.listening.close()  # ends the listener's wait
        for thread in self.threads:
            thread.join(0.5)
        for transport in self.transports:
            transport.close()

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        stop = self.sender.stop
        held = 2 * self.settings.webhook_concurrency  # rows in flight or waiting for a thread
        turn = 0.0
        try:
            while not stop.is_set():
                self.wake.clear()  # whatever sets it from here on ends the wait below
                if self.failure is not None:
                    raise self.failure
                free = held - self.busy + len(self.done)
                now = time.monotonic()
                claim = free > 0 and (self.notified or self.backlog or now >= self.next_poll)
                self._turn(free if claim else 0)
                now = time.monotonic()
                if not (self.done or (self.backlog and self.busy < held)):
                    self.wake.wait(min(max(0.0, self.next_poll - now), 0.25))  # 0.25: stop
                # let the POSTs ending meanwhile join the next turn's batch (a few ms at most)
                time.sleep(max(0.0, turn + TURN_S - time.monotonic()))
                turn = time.monotonic()
        finally:
            self._drain()

    def _turn(self, claim: int) -> None:
        """One round trip (pipeline mode): write the outcomes of the POSTs that ended (a
        2xx deletes the row; a failure schedules the next attempt or marks the row dead),
        then claim up to ``claim`` due rows and hand them to the POST threads."""
        with self.lock:
            outcomes, self.done = self.done, []
        self.busy -= len(outcomes)
        delivered = [o.seq for o in outcomes if o.ok]
        failures = [{"s": o.seq, "e": o.error} for o in outcomes if not o.ok]
        errors = {o.id: o.error for o in outcomes if not o.ok}
        if not (delivered or errors or claim):
            return
        if claim:
            self.notified = False
        with self.conn.pipeline():
            if delivered:
                self.conn.execute(_DONE, (delivered,))
            failed = self.conn.execute(_FAILED, {
                "rows": as_json(failures),
                "retry": self.settings.webhook_retry_for, "base": self.settings.webhook_backoff,
                "max": MAX_DELAY_S, "me": self.sender.name}) if errors else None
            claimed = self.conn.execute(_CLAIM, {
                "n": claim, "lease": self.sender.lease_s, "me": self.sender.name}
            ) if claim else None
        dead = self._log_failures(failed.fetchall(), errors) if failed is not None else 0
        self.sender.progress(len(delivered), len(errors), dead)
        if claimed is not None:
            self._hand_out(claimed.fetchall(), claim)

    def _hand_out(self, rows: list[tuple[int, str, str, int]], asked: int) -> None:
        self.busy += len(rows)
        for seq, delivery, body, _attempts in rows:
            self.work.put((seq, delivery, body.encode()))
        self.backlog = len(rows) == asked
        if not rows:  # read again when the next row is due (or after POLL_S)
            row = self.conn.execute(_DUE_IN).fetchone()
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

    def _drain(self) -> None:
        """SIGTERM (or a crash): let the POSTs in flight end (each within its timeout) and
        record them; a row left unrecorded is retried when its lease ends."""
        deadline = time.monotonic() + self.settings.webhook_timeout + 1
        while self.busy > len(self.done) and time.monotonic() < deadline:
            self.wake.wait(0.05)
            self.wake.clear()
        try:
            self._turn(0)
        except psycopg.Error as exc:
            log.warning("webhook_unrecorded", error=str(exc))

    # -- the other threads ----------------------------------------------------------------
    def _post_loop(self, http: httpx.HTTPTransport) -> None:
        headers = {"Content-Type": "application/json"}
        secret, url = self.settings.webhook_secret, self.settings.webhook_url
        timeout = self.settings.webhook_timeout
        timeouts = httpx.Timeout(timeout).as_dict()
        while True:
            item = self.work.get()
            if item is None:
                return
            seq, delivery, body = item
            sent = {**headers, DELIVERY_HEADER: delivery,
                    SIGNATURE_HEADER: sign(secret, body)}
            try:
                request = httpx.Request("POST", url, content=body, headers=sent,
                                        extensions={"timeout": timeouts})
                response = http.handle_request(request)
                try:
                    response.read()
                finally:
                    response.close()
                status = response.status_code
                outcome = (Outcome(seq, delivery, True) if 200 <= status < 300
                           else Outcome(seq, delivery, False, f"HTTP {status}"))
            except httpx.TimeoutException:
                outcome = Outcome(seq, delivery, False, f"no answer within {timeout:g} s")
            except Exception as exc:  # any failure of one POST is that delivery's failure
                outcome = Outcome(seq, delivery, False, f"{type(exc).__name__}: {exc}"[:300])
            with self.lock:
                self.done.append(outcome)
            self.wake.set()

    def _listen(self) -> None:
        """Every NOTIFY on the channel wakes the loop (a commit enqueued rows)."""
        try:
            while not self.over.is_set():
                for _ in self.listening.notifies(timeout=0.5, stop_after=1):
                    self.notified = True
                    self.wake.set()
        except Exception as exc:
            if not self.over.is_set():
                self.failure = exc  # the loop raises it: the session restarts
                self.wake.set()
