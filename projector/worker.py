"""One projector worker: owns some partitions, applies their logs to Postgres.

Per batch, one transaction: archive + projection (domain fold) + dead letters +
compare-and-set checkpoint. Commit, then XACK, then trim the log below the
checkpoint. A crash anywhere replays harmlessly: the checkpoint is the truth.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis
import structlog

from domain.ids import event_key
from duologue.keys import Keys
from duologue.settings import Settings
from projector import ledger
from projector.entries import Entry, Poison, parse
from projector.ownership import Owned, Ownership
from projector.project import project
from projector.tables import LIVE, PROJECTION_LOCK

log = structlog.get_logger("duologue.projector")
MAX_DELIVERIES = 10
TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, redis.ConnectionError,
             redis.TimeoutError, redis.BusyLoadingError)
RETRY_IN_PLACE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
POISONOUS = (psycopg.DataError, psycopg.IntegrityError)
Raw = tuple[bytes, dict[bytes, bytes] | None]


@dataclass
class Chunk:
    """Entries of one partition log as read, each parsed (in the read-ahead thread)."""

    owned: Owned
    raw: list[Raw]
    parsed: list[Entry | Poison] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.parsed:
            self.parsed = [_parse(i.decode(), f) for i, f in self.raw]


class Worker:
    def __init__(self, settings: Settings, *, burst: bool = False,
                 stop: threading.Event | None = None, batch: int = 1000) -> None:
        self.settings = settings
        self.keys = Keys(settings.prefix, settings.partitions)
        self.burst = burst
        self.stop = stop or threading.Event()
        self.batch = batch
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.applied = 0
        self._count = threading.Lock()
        # (stream, entry id) -> its delivery count when this process first re-read it
        self.first_count: dict[tuple[str, bytes], int] = {}

    def run(self) -> None:
        """Project until stopped (or, in burst mode, until every owned log is drained)."""
        delay = 0.1
        log.info("projector_started", worker=self.name, burst=self.burst)
        while not self.stop.is_set():
            try:
                with self._connect() as (conns, client):
                    delay = 0.1
                    if self._loop(conns, client):
                        break
            except TRANSIENT as exc:
                log.warning("projector_retry", error=f"{type(exc).__name__}: {exc}",
                            retry_in=round(delay, 2))
                self.stop.wait(delay)
                delay = min(delay * 2, 5.0)
        log.info("projector_stopped", worker=self.name, applied=self.applied)

    def _connect(self) -> Any:
        return _Session(self.settings)

    def _loop(self, conns: list[psycopg.Connection], client: redis.Redis) -> bool:
        """Read the next entries (in a thread) while the current ones commit; partitions
        are split over lanes, each committing on its own connection, so Postgres works
        on one lane's batch while Python prepares the other's."""
        owner = Ownership(conns[0], client, self.keys, self.name)
        ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="projector-read")
        lanes = ThreadPoolExecutor(max_workers=max(1, len(conns) - 1),
                                   thread_name_prefix="projector-lane")
        next_read: Future[list[Chunk]] | None = None
        try:
            while not self.stop.is_set():
                owner.rebalance()
                if next_read is not None:
                    chunks = _still_ours(next_read.result(), owner)
                    next_read = None
                else:
                    chunks = self._read(client, owner)
                if chunks:
                    if owner.owned and not any(o.pending for o in owner.owned.values()):
                        next_read = ahead.submit(self._read_new, client, _ready(owner))
                    self._apply(conns, lanes, client, chunks, owner)
                elif self.burst and owner.complete():
                    return True
            return True
        finally:
            ahead.shutdown(wait=True)  # a read in flight ends within its BLOCK timeout;
            lanes.shutdown(wait=True)  # what it got stays pending for the next owner
            owner.release_all()

    def _read(self, client: redis.Redis, owner: Ownership) -> list[Chunk]:
        pending = {o.stream: o for o in owner.owned.values() if o.pending}
        if pending:
            found: Any = client.xreadgroup(ledger.GROUP, self.name, {s: "0" for s in pending},
                                           count=self.batch)
            chunks = []
            for stream, entries in _streams(found):
                owned = pending[stream.decode()]
                if entries:
                    raw = self._deliveries(client, owned, _entries(entries))
                    chunks.append(Chunk(owned, raw))
                else:
                    owned.pending = False
            if chunks:
                return chunks
        if not any(not o.pending for o in owner.owned.values()):
            self.stop.wait(0.5)
            return []
        return self._read_new(client, _ready(owner))

    def _read_new(self, client: redis.Redis, by_stream: dict[str, Owned]) -> list[Chunk]:
        """New entries (``>``) of the given logs (owned, with no pending entries to redo)."""
        if not by_stream:
            return []
        streams: Any = {s: ">" for s in by_stream}
        found: Any = client.xreadgroup(ledger.GROUP, self.name, streams, count=self.batch,
                                       block=100 if self.burst else 500)
        return [Chunk(by_stream[s.decode()], _entries(entries))
                for s, entries in _streams(found) if entries]

    def _deliveries(self, client: redis.Redis, owned: Owned, entries: list[Raw]) -> list[Raw]:
        """Entries redelivered too often become poison, so a crash loop cannot stall us.

        Counted as when this process first re-read them: the claims and re-reads of its
        own retries after a transient error (Postgres or Redis away) are not a crash.
        """
        info: Any = client.xpending_range(owned.stream, ledger.GROUP, min=entries[0][0],
                                     max=entries[-1][0], count=len(entries),
                                     consumername=self.name)
        too_often = {i["message_id"] for i in info if self.first_count.setdefault(
            (owned.stream, i["message_id"]), i["times_delivered"]) > MAX_DELIVERIES}
        return [(i, {b"!": b"delivered too often"} if i in too_often else f)
                for i, f in entries]

    def _apply(self, conns: list[psycopg.Connection], lanes: ThreadPoolExecutor,
               client: redis.Redis, chunks: list[Chunk], owner: Ownership) -> None:
        """Commit the chunks, each partition's in order, its lane's connection."""
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

    def _apply_lane(self, conn: psycopg.Connection, client: redis.Redis,
                    chunks: list[Chunk], moved: list[str]) -> None:
        group: list[Chunk] = []
        for index, chunk in enumerate(chunks):
            if group and sum(len(c.raw) for c in group) + len(chunk.raw) > self.batch:
                self._commit_safely(conn, client, group, moved)
                group = []
                if self.stop.is_set():  # SIGTERM: the batch in hand is done, the rest
                    for rest in chunks[index:]:  # stays pending for the next owner
                        rest.owned.pending = True
                    return
            group.append(chunk)
        if group:
            self._commit_safely(conn, client, group, moved)

    def _commit_safely(self, conn: psycopg.Connection, client: redis.Redis,
                       group: list[Chunk], moved: list[str]) -> None:
        """Commit; on a data error split the batch until the poison entry stands alone."""
        attempt = 0
        while True:
            try:
                self._commit(conn, group, poison=False)
                break
            except RETRY_IN_PLACE:
                attempt += 1
                time.sleep(min(0.05 * attempt, 1.0))
            except POISONOUS as exc:
                if sum(len(c.raw) for c in group) == 1:
                    log.error("projector_poison", error=str(exc), stream=group[0].owned.stream)
                    self._commit(conn, group, poison=True, reason=str(exc))
                    break
                for half in _halves(group):
                    self._commit_safely(conn, client, half, moved)
                return
            except ledger.CheckpointMoved as exc:
                log.error("projector_checkpoint_moved", stream=exc.stream)
                for chunk in group:
                    chunk.owned.pending = True  # rolled back: read these again from the PEL
                moved.append(exc.stream)  # released by the loop's thread, not a lane's
                return
        _acknowledge(client, group)
        for chunk in group:
            for log_id, _ in chunk.raw:
                self.first_count.pop((chunk.owned.stream, log_id), None)

    def _commit(self, conn: psycopg.Connection, group: list[Chunk], *, poison: bool,
                reason: str = "") -> None:
        moves: list[tuple[Owned, str, int]] = []
        with conn.pipeline(), conn.transaction(), conn.cursor() as cur:
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (PROJECTION_LOCK,))
            good: list[Entry] = []
            for chunk in group:
                floor = event_key(chunk.owned.checkpoint)
                above = [(i.decode(), p) for (i, _), p in zip(chunk.raw, chunk.parsed,
                                                               strict=True)
                         if _log_key(i) > floor]
                if not above:
                    continue
                parsed = [_bury(p, reason) if poison else p for _, p in above]
                dead = [p for p in parsed if isinstance(p, Poison)]
                good += [p for p in parsed if isinstance(p, Entry)]
                ledger.bury(cur, chunk.owned.stream, chunk.owned.partition, dead)
                for p in dead:
                    log.error("projector_dead_letter", stream=chunk.owned.stream,
                              log_id=p.log_id, reason=p.reason)
                moves.append((chunk.owned, above[-1][0], len(above)))
            applied = project(cur, LIVE, good)
            for owned, new, count in moves:
                ledger.advance(cur, owned.stream, owned.checkpoint, new, count)
        for owned, new, _ in moves:
            owned.checkpoint = new
        with self._count:
            self.applied += applied


def _log_key(log_id: bytes) -> tuple[int, int]:
    ms, _, seq = log_id.partition(b"-")  # Redis wrote these ids: always "<ms>-<seq>"
    return int(ms), int(seq)


def _parse(log_id: str, fields: dict[bytes, bytes] | None) -> Entry | Poison:
    if fields and b"!" in fields:
        return Poison(log_id, fields[b"!"].decode())
    return parse(log_id, fields)


def _bury(parsed: Entry | Poison, reason: str) -> Poison:
    """An entry Postgres refused, kept whole in the dead letters with Postgres's reason."""
    if isinstance(parsed, Poison):
        return parsed
    return Poison(parsed.log_id, reason, parsed.thread, parsed.id, parsed.payload)


def _halves(group: list[Chunk]) -> list[list[Chunk]]:
    flat = [(c.owned, r, p) for c in group for r, p in zip(c.raw, c.parsed, strict=True)]
    middle = len(flat) // 2
    out = []
    for part in (flat[:middle], flat[middle:]):
        chunks: list[Chunk] = []
        for owned, raw, parsed in part:
            if chunks and chunks[-1].owned is owned:
                chunks[-1].raw.append(raw)
                chunks[-1].parsed.append(parsed)
            else:
                chunks.append(Chunk(owned, [raw], [parsed]))
        out.append(chunks)
    return out


def _ready(owner: Ownership) -> dict[str, Owned]:
    return {o.stream: o for o in owner.owned.values() if not o.pending}


def _still_ours(chunks: list[Chunk], owner: Ownership) -> list[Chunk]:
    """Read-ahead entries of partitions we still own as then, with nothing to redo first
    (else applying them would jump the checkpoint past entries still pending)."""
    return [c for c in chunks
            if owner.owned.get(c.owned.partition) is c.owned and not c.owned.pending]


def _streams(reply: Any) -> list[tuple[bytes, list[Any]]]:
    """(stream, entries) pairs of a raw XREADGROUP reply: a map on RESP3, pairs on RESP2."""
    if not reply:
        return []
    return list(reply.items()) if isinstance(reply, dict) else [(s, e) for s, e in reply]


def _entries(reply: list[Any]) -> list[Raw]:
    """Raw XREADGROUP entries ``[id, [field, value, ...] | None]`` as (id, fields)."""
    return [(i, dict(zip(f[::2], f[1::2], strict=True)) if f is not None else None)
            for i, f in reply]


def _acknowledge(client: redis.Redis, group: list[Chunk]) -> None:
    with client.pipeline(transaction=False) as pipe:
        for chunk in group:
            pipe.xack(chunk.owned.stream, ledger.GROUP, *[i for i, _ in chunk.raw])
            if chunk.owned.checkpoint != "0":
                pipe.xtrim(chunk.owned.stream, minid=chunk.owned.checkpoint, approximate=True)
        pipe.execute()


class _Session:
    """Postgres connections, one per lane (the first one's advisory locks are our
    ownership), and a Redis client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __enter__(self) -> tuple[list[psycopg.Connection], redis.Redis]:
        self.conns: list[psycopg.Connection] = []
        for _ in range(self.settings.projector_lanes):
            self.conns.append(psycopg.connect(
                self.settings.database_url, autocommit=True, connect_timeout=5,
                application_name="duologue-projector"))
        self.client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=10,
                                           socket_connect_timeout=3)
        # entries as Redis sends them: redis-py's dict building was a tenth of our CPU
        self.client.set_response_callback("XREADGROUP", lambda reply, **_: reply)
        return self.conns, self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        for conn in self.conns:
            conn.close()
