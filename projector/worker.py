"""One projector worker: owns some partitions, applies their logs to Postgres.

Per batch, one transaction: archive + projection (domain fold) + dead letters +
compare-and-set checkpoint from the id the batch was read after. Commit, then trim
the log below the checkpoint. Reads start at the checkpoint (``projector.reading``),
so a crash, a change of owner or a failed commit anywhere replays harmlessly and
never skips an entry: the checkpoint in Postgres is the truth.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import psycopg
import redis
import structlog
from redis.exceptions import ClusterDownError, RedisClusterException, TryAgainError

from adapters.record import Keys
from adapters.redis_connect import SyncRedis, sync_redis
from adapters.settings import Settings
from domain.ids import event_key, ms_of
from projector import attempts, ledger
from projector.entries import Entry, Poison
from projector.ownership import Ownership
from projector.project import Refusal, project
from projector.reading import Chunk, raw_replies, read, usable
from projector.retention import Retention, heads_of
from projector.tables import LIVE, PROJECTION_LOCK
from projector.webhook_outbox import Outbox

log = structlog.get_logger("duologue.projector")
TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, redis.ConnectionError,
             redis.TimeoutError, redis.BusyLoadingError,
             # a Redis Cluster while a failover or a slot move runs
             ClusterDownError, TryAgainError, RedisClusterException)
RETRY_IN_PLACE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure,
                  psycopg.errors.LockNotAvailable)  # a lock wait over LOCK_TIMEOUT: logged
LOCK_TIMEOUT = "5s"  # the most a batch waits for a lock (a stray session holding one)
POISONOUS = (psycopg.DataError, psycopg.IntegrityError)


class Worker:
    def __init__(self, settings: Settings, *, burst: bool = False,
                 stop: threading.Event | None = None, batch: int = 1000,
                 report_lag: Callable[[float], None] | None = None) -> None:
        self.settings = settings
        self.keys = Keys(settings.prefix, settings.partitions)
        self.burst = burst
        self.stop = stop or threading.Event()
        self.batch = batch
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.applied = 0
        self._count = threading.Lock()
        self.retention = Retention(self.keys, settings.retain_events, settings.retain_idle,
                                   settings.retention_every)
        self.outbox = Outbox(settings)  # offline notifications, in each batch's transaction
        self.report_lag = report_lag  # how far behind each read is (the webhook senders')
        self._redis_clock = RedisClock()

    def run(self) -> None:
        """Project until stopped (or, in burst mode, until every owned log is drained)."""
        delay = 0.1
        log.info("projector_started", worker=self.name, burst=self.burst)
        while not self.stop.is_set():
            try:
                with _Session(self.settings) as (conns, client):
                    delay = 0.1
                    if self._loop(conns, client):
                        break
            except TRANSIENT as exc:
                log.warning("projector_retry", error=f"{type(exc).__name__}: {exc}",
                            retry_in=round(delay, 2))
                self.stop.wait(delay)
                delay = min(delay * 2, 5.0)
        self.outbox.close()
        log.info("projector_stopped", worker=self.name, applied=self.applied)

    def _loop(self, conns: list[psycopg.Connection], client: SyncRedis) -> bool:
        """Read the next entries (in a thread) while the current ones commit; partitions
        are split over lanes, each committing on its own connection, so Postgres works
        on one lane's batch while Python prepares the other's."""
        owner = Ownership(conns[0], client, self.keys, self.name, self.settings.dedupe_ttl)
        ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="projector-read")
        lanes = ThreadPoolExecutor(max_workers=max(1, len(conns) - 1),
                                   thread_name_prefix="projector-lane")
        next_read: Future[list[Chunk]] | None = None
        ends: dict[int, str] = {}
        covered: set[int] = set()
        try:
            while not self.stop.is_set():
                # a read in flight ends before any partition changes hands
                chunks = next_read.result() if next_read is not None else None
                next_read = None
                owner.rebalance()
                if chunks is None or not _still_at(owner, ends) or covered != set(owner.owned):
                    chunks = self._read(client, owner, {})  # from every checkpoint
                chunks = usable(chunks, owner.owned)
                if self.report_lag is not None:
                    self.report_lag(_behind(chunks, self._redis_clock.now(client)))
                if chunks:
                    if not any(o.narrow for o in owner.owned.values()):
                        ends = {c.owned.partition: c.last for c in chunks}
                        covered = set(owner.owned)
                        next_read = ahead.submit(self._read, client, owner, dict(ends))
                    self._apply(conns, lanes, client, chunks, owner)
                elif self.burst and owner.complete():
                    self.retention.run(conns[0], client, owner.owned)  # a last pass
                    return True
                if self.retention.due():
                    self.retention.run(conns[0], client, owner.owned)
            return True
        finally:
            ahead.shutdown(wait=True)  # a read in flight ends within its BLOCK timeout
            lanes.shutdown(wait=True)
            owner.release_all()

    def _read(self, client: SyncRedis, owner: Ownership,
              ends: dict[int, str]) -> list[Chunk]:
        """The entries after each owned partition's checkpoint (or after ``ends``, the last
        ids of the batch being committed, when reading ahead)."""
        after = {o.stream: (o, ends.get(p, o.checkpoint)) for p, o in owner.owned.items()}
        if not after:
            self.stop.wait(0.5)
            return []
        chunks = read(client, after, self.batch, 100 if self.burst else 500)
        self.outbox.prefetch(chunks)  # off the commit's path: this runs while one commits
        return chunks

    def _apply(self, conns: list[psycopg.Connection], lanes: ThreadPoolExecutor,
               client: SyncRedis, chunks: list[Chunk], owner: Ownership) -> None:
        """Commit the chunks, each partition's in order, on its lane's connection."""
        chunks = self._narrowed(client, chunks)
        split = [[c for c in chunks if c.owned.partition % len(conns) == k]
                 for k in range(len(conns))]
        moved: list[str] = []
        others = [lanes.submit(self._apply_lane, conns[k], client, split[k], moved)
                  for k in range(1, len(conns)) if split[k]]
        try:
            self._apply_lane(conns[0], client, split[0], moved)
        finally:
            wait(others)  # never leave a lane running on a connection about to close
        for future in others:
            future.result()  # a lane's error (Postgres away) is this worker's error
        for stream in moved:
            owner.release(stream)

    def _narrowed(self, client: SyncRedis, chunks: list[Chunk]) -> list[Chunk]:
        """Chunks as the crash-loop bookkeeping says to apply them (``projector.attempts``)."""
        first = [c for c in chunks if not c.owned.tried]
        plans = attempts.plan_first_batches(client, self.keys, first) if first else []
        buried = set()
        for chunk, plan in zip(first, plans, strict=True):
            chunk.owned.tried = True
            if plan.mode != "batch":
                chunk.owned.narrow = plan.until
                log.error("projector_crash_loop", stream=chunk.owned.stream, at=chunk.after,
                          mode=plan.mode, until=plan.until)
            if plan.mode == "bury":
                buried.add(id(chunk))
        out = []
        for chunk in chunks:
            narrow = chunk.owned.narrow
            if narrow is not None and event_key(chunk.after) >= event_key(narrow):
                chunk.owned.narrow = narrow = None
            if id(chunk) in buried:
                reason = f"the projector died {attempts.TOLERATED} times applying this entry"
                out.append(chunk.first(_bury(chunk.parsed[0], reason)))
            elif narrow is not None:
                out.append(chunk.first())
            else:
                out.append(chunk)
        return out

    def _apply_lane(self, conn: psycopg.Connection, client: SyncRedis,
                    chunks: list[Chunk], moved: list[str]) -> None:
        group: list[Chunk] = []
        for chunk in chunks:
            if group and sum(len(c.raw) for c in group) + len(chunk.raw) > self.batch:
                self._commit_safely(conn, client, group, moved)
                group = []
                if self.stop.is_set():  # SIGTERM: the batch in hand is done; the rest
                    return  # is read again from the checkpoint by the next owner
            group.append(chunk)
        if group:
            self._commit_safely(conn, client, group, moved)

    def _commit_safely(self, conn: psycopg.Connection, client: SyncRedis,
                       group: list[Chunk], moved: list[str]) -> None:
        """Commit; on a data error split the batch until the poison entry stands alone."""
        attempt = 0
        while True:
            try:
                self._commit(conn, group, poison=False)
                break
            except RETRY_IN_PLACE as exc:
                attempt += 1
                if isinstance(exc, psycopg.errors.LockNotAvailable):
                    log.warning("projector_lock_wait", waited=LOCK_TIMEOUT, attempt=attempt,
                                error=str(exc).splitlines()[0],
                                hint="a session holds a lock the batch needs: "
                                     "pg_locks / pg_stat_activity name it")
                time.sleep(min(0.05 * attempt, 1.0))
            except POISONOUS as exc:
                if sum(len(c.raw) for c in group) == 1:
                    log.error("projector_poison", error=str(exc), stream=group[0].owned.stream)
                    self._commit(conn, group, poison=True, reason=str(exc))
                    break
                for half in _halves(group):
                    self._commit_safely(conn, client, half, moved)
                return
            except ledger.CheckpointMovedError as exc:
                log.error("projector_checkpoint_moved", stream=exc.stream)
                moved.append(exc.stream)  # released by the loop's thread, not a lane's
                return
        _trim_logs(client, group)

    def _commit(self, conn: psycopg.Connection, group: list[Chunk], *, poison: bool,
                reason: str = "") -> None:
        with conn.pipeline(), conn.transaction(), conn.cursor() as cur:
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (PROJECTION_LOCK,))
            good: list[Entry] = []
            refused: list[tuple[Chunk, Poison]] = []
            for chunk in group:
                parsed = [_bury(p, reason) if poison else p for p in chunk.parsed]
                refused += [(chunk, p) for p in parsed if isinstance(p, Poison)]
                good += [p for p in parsed if isinstance(p, Entry)]
            conflicts: list[Refusal] = []
            fresh: list[Entry] = []
            applied = project(cur, LIVE, good, refused=conflicts, applied=fresh)
            self.outbox.enqueue(cur, fresh, _online(group))
            chunk_of = {id(e): c for c in group for e in c.parsed}
            refused += [(chunk_of[id(e)], _bury(e, why)) for e, why in conflicts]
            for chunk, dead in refused:
                ledger.bury(cur, chunk.owned.stream, chunk.owned.partition, [dead])
                log.error("projector_dead_letter", stream=chunk.owned.stream,
                          log_id=dead.log_id, reason=dead.reason)
            for chunk in group:
                ledger.advance(cur, chunk.owned.stream, chunk.after, chunk.last, len(chunk.raw))
        for chunk in group:
            chunk.owned.checkpoint = chunk.last
        self.retention.archived(heads_of(good).items())
        with self._count:
            self.applied += applied


def _online(group: list[Chunk]) -> frozenset[str] | None:
    """The recipients online when the group's chunks were read, if known for all."""
    known = [c.online for c in group if c.online is not None]
    return frozenset[str]().union(*known) if len(known) == len(group) else None


class RedisClock:
    """Redis's time (log ids are its milliseconds), from this machine's clock and an offset
    read with ``TIME`` at most every ``EVERY_S``: a projector whose clock is off by seconds
    must not look behind (its senders would hold) or ahead."""

    EVERY_S = 10.0

    def __init__(self) -> None:
        self.offset = 0.0
        self.read_at = -self.EVERY_S

    def now(self, client: SyncRedis) -> float:
        mono = time.monotonic()
        if mono - self.read_at >= self.EVERY_S:
            with contextlib.suppress(redis.RedisError, RedisClusterException):
                seconds, micros = client.time()
                self.offset = seconds + micros / 1e6 - time.time()
            self.read_at = mono
        return time.time() + self.offset


def _behind(chunks: list[Chunk], now: float) -> float:
    """Seconds from the oldest entry of a read being appended (its log id's ms, the Redis
    clock) to ``now`` (Redis's); 0 for an empty read: caught up."""
    if not chunks:
        return 0.0
    oldest = min(ms_of(c.raw[0][0].decode()) for c in chunks)
    return max(0.0, now - oldest / 1000)


def _still_at(owner: Ownership, ends: dict[int, str]) -> bool:
    """Did every batch read ahead of commit as read (its partition still ours, its
    checkpoint now where the read-ahead began)? Else that read is not to be trusted to
    be gapless or complete, and every log is read again from its checkpoint (as when the
    partitions we own changed meanwhile)."""
    return all(p in owner.owned and owner.owned[p].checkpoint == end for p, end in ends.items())


def _bury(parsed: Entry | Poison, reason: str) -> Poison:
    """An entry refused whole, kept in the dead letters with its thread, id and payload."""
    if isinstance(parsed, Poison):
        return parsed
    return Poison(parsed.log_id, reason, parsed.thread, parsed.id, parsed.payload)


def _halves(group: list[Chunk]) -> list[list[Chunk]]:
    """The batch's entries in two halves, each chunk starting right after the last."""
    flat = [(c, r, p) for c in group for r, p in zip(c.raw, c.parsed, strict=True)]
    middle = len(flat) // 2
    out = []
    for part in (flat[:middle], flat[middle:]):
        chunks: list[Chunk] = []
        for chunk, raw, parsed in part:
            if chunks and chunks[-1].owned is chunk.owned:
                chunks[-1].raw.append(raw)
                chunks[-1].parsed.append(parsed)
            else:
                after = chunk.after if raw is chunk.raw[0] else _before(chunk, raw)
                chunks.append(Chunk(chunk.owned, after, [raw], [parsed]))
        out.append(chunks)
    return out


def _before(chunk: Chunk, raw: Any) -> str:
    index = next(n for n, r in enumerate(chunk.raw) if r is raw)
    return chunk.raw[index - 1][0].decode()


def _trim_logs(client: SyncRedis, group: list[Chunk]) -> None:
    """Entries at or below the checkpoint are projected: the log need not keep them."""
    with client.pipeline(transaction=False) as pipe:
        for chunk in group:
            pipe.xtrim(chunk.owned.stream, minid=chunk.owned.checkpoint, approximate=True)
        pipe.execute()


def _connect(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True, connect_timeout=5,
                           application_name="duologue-projector")
    # a killed worker's backend waiting on a lock notices within a second that its
    # client is gone, and so frees the worker's partitions (PostgreSQL 14+)
    with contextlib.suppress(psycopg.errors.UndefinedObject):
        conn.execute("SET client_connection_check_interval = '1s'")
    conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")  # waits bounded, then logged
    return conn


class _Session:
    """Postgres connections, one per lane (the first one's advisory locks are our
    ownership), and a Redis client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __enter__(self) -> tuple[list[psycopg.Connection], SyncRedis]:
        self.conns: list[psycopg.Connection] = []
        for _ in range(self.settings.projector_lanes):
            self.conns.append(_connect(self.settings.database_url))
        self.client = sync_redis(self.settings.redis_url, socket_timeout=10,
                                           socket_connect_timeout=3)
        raw_replies(self.client)
        return self.conns, self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        for conn in self.conns:
            conn.close()
