"""After Redis restarts or fails over: check each partition against the archive, give
back what Redis lost that the archive holds, then let the gateways in again.

Every append and replay of a partition first compares the partition's epoch key with
the Redis run id (``gateway/fence.lua``) and answers ``unavailable`` while they differ.
The projector owning the partition *seals* it: when Redis's partition log ends below
the projector's checkpoint, Redis lost acked writes the archive already has, and

- the log continues above the checkpoint (new entries are never at or below it);
- each thread whose newest archived event Redis no longer has continues above it: its
  participants' index and its stream's last id are raised, its ``lo`` says the events
  below are the archive's (``sync`` replays them from there), its read receipts are
  restored from the projection;
- the idempotency records of those events are written again, so a client resending a
  command the archive holds gets its first ack, not a second event.

Then the epoch key names this Redis run, and appends go on. A partition with nothing
lost is sealed at once. (An Redis that lost every key, including the epoch, is not
fenced: it is repaired the same way at the projector's next check, see docs.)
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
import redis
import structlog

from adapters.record import BLOCKED, RECEIPT, RECEIPT_EVENT, UNBLOCKED, Keys, lua
from adapters.redis_connect import SyncRedis, scripted
from domain.ids import event_key, ms_of, participants, sort_key
from domain.state import author
from schemas.events import ReadUpTo, decode_event

if TYPE_CHECKING:
    from projector.ownership import Owned

log = structlog.get_logger("duologue.seal")
REPAIR_LUA = lua("projector", "repair.lua")
MARGIN_MS = 60_000  # threads active this long before the log's last entry are checked too
PAGE = 1000


@dataclass
class Repaired:
    partitions: int = 0
    threads: int = 0
    dedupe: int = 0


def unsealed(client: SyncRedis, keys: Keys, owned: Iterable[Owned],
             run_of: Callable[[str], str]) -> list[Owned]:
    """The owned partitions whose epoch does not name the run of the Redis holding them
    (``adapters.redis_connect.run_ids``)."""
    owned = list(owned)
    with client.pipeline(transaction=False) as pipe:
        for o in owned:
            pipe.get(keys.epoch(o.partition))
        epochs: list[Any] = pipe.execute()
    return [o for o, e in zip(owned, epochs, strict=True)
            if e is None or e.decode() != run_of(keys.epoch(o.partition))]


def seal(conn: psycopg.Connection, client: SyncRedis, keys: Keys, owned: list[Owned],
         run_of: Callable[[str], str], dedupe_ttl: int) -> Repaired:
    """Repair what Redis lost in these partitions (if anything), then seal them."""
    done = Repaired()
    lost = [(o, head) for o in owned if event_key(head := _log_head(client, o.stream))
            < event_key(o.checkpoint)]
    if lost:
        done = _repair(conn, client, keys, lost, dedupe_ttl)
    with client.pipeline(transaction=False) as pipe:
        for o in owned:
            run = run_of(keys.epoch(o.partition))
            if run:  # unknown (its primary changed since INFO): sealed on a later loop
                pipe.set(keys.epoch(o.partition), run)
        pipe.execute()
    for o, head in lost:
        log.warning("redis_lost_acked_events", partition=o.partition, log_head=head,
                    checkpoint=o.checkpoint)
    if lost:
        log.warning("redis_repaired", partitions=done.partitions, threads=done.threads,
                    idempotency_records=done.dedupe)
    return done


def _log_head(client: SyncRedis, stream: str) -> str:
    """The last id the partition log ever handed out ("0" if it has none)."""
    try:
        info: Any = client.xinfo_stream(stream)
    except redis.ResponseError:  # no such key: Redis lost the log (or never had one)
        return "0"
    last = info["last-generated-id"]
    last = last.decode() if isinstance(last, bytes) else str(last)
    return "0" if last == "0-0" else last


def _repair(conn: psycopg.Connection, client: SyncRedis, keys: Keys,
            lost: list[tuple[Owned, str]], dedupe_ttl: int) -> Repaired:
    done = Repaired(partitions=len(lost))
    for o, _ in lost:  # the log continues above the checkpoint
        if client.exists(o.stream):
            client.execute_command("XSETID", o.stream, o.checkpoint)  # type: ignore[no-untyped-call]
        else:
            client.xadd(o.stream, {"repaired": "1"}, id=o.checkpoint, maxlen=0)
    heads = [head for _, head in lost]
    since = None if "0" in heads else min(ms_of(h) for h in heads) - MARGIN_MS
    parts = {o.partition for o, _ in lost}
    behind = _threads_behind(conn, client, keys, parts, since)
    done.threads = len(behind)
    _restore_threads(conn, client, keys, behind)
    done.dedupe = _restore_dedupe(conn, client, keys, behind, dedupe_ttl)
    return done


def _threads_behind(conn: psycopg.Connection, client: SyncRedis, keys: Keys, parts: set[int],
                    since: int | None) -> dict[str, tuple[str, str]]:
    """thread -> (the archive's newest id, Redis's newest id or "0") for the threads of
    these partitions whose newest archived event Redis no longer knows."""
    query = "SELECT thread, last_id FROM threads"
    params: list[object] = []
    if since is not None:
        query += " WHERE last_at >= duologue_ts(%s)"
        params.append(since)
    rows = [(t, i) for t, i in conn.execute(query, params) if keys.partition(t) in parts]
    behind: dict[str, tuple[str, str]] = {}
    for start in range(0, len(rows), PAGE):
        page = rows[start:start + PAGE]
        with client.pipeline(transaction=False) as pipe:
            for thread, _ in page:
                pipe.hget(keys.index(keys.partition(thread), participants(thread)[0]), thread)
            known: list[Any] = pipe.execute()
        for (thread, last_id), head in zip(page, known, strict=True):
            redis_head = head.decode() if head else "0"
            if event_key(redis_head) < event_key(last_id):
                behind[thread] = (last_id, redis_head)
    return behind


def _restore_threads(conn: psycopg.Connection, client: SyncRedis, keys: Keys,
                     behind: dict[str, tuple[str, str]]) -> None:
    """Each thread's stream and index continue above the archive; its read receipts and
    blocks are the projection's (which holds every archived event), its reactions are
    read from the projection from now on (all its targets are below the new ``lo``)."""
    fields: dict[str, list[str]] = defaultdict(list)
    for thread, reader, up_to, event_id in conn.execute(
            "SELECT thread, reader, up_to, event_id FROM read_receipts WHERE thread = ANY(%s)",
            (list(behind),)):
        fields[thread] += [RECEIPT + reader, up_to, RECEIPT_EVENT + reader, event_id]
    for thread, by, blocked in conn.execute(
            "SELECT thread, by, event_id FROM blocks WHERE thread = ANY(%s)", (list(behind),)):
        fields[thread] += [BLOCKED + by, blocked]
    for thread, by, unblocked in conn.execute(
            "SELECT DISTINCT ON (thread, payload->>'by') thread, payload->>'by', id FROM events "
            "WHERE thread = ANY(%s) AND kind = 'ThreadUnblocked' "
            "ORDER BY thread, payload->>'by', key DESC", (list(behind),)):
        fields[thread] += [UNBLOCKED + by, unblocked]
    script: Any = scripted(client, REPAIR_LUA)
    threads = list(behind)
    for start in range(0, len(threads), PAGE):
        with client.pipeline(transaction=False) as pipe:
            for thread in threads[start:start + PAGE]:
                part = keys.partition(thread)
                a, b = participants(thread)
                script(keys=[keys.stream(thread), keys.state(thread), keys.index(part, a),
                             keys.index(part, b)],
                       args=[thread, behind[thread][0], "1", *fields[thread]], client=pipe)
            pipe.execute()


def _restore_dedupe(conn: psycopg.Connection, client: SyncRedis, keys: Keys,
                    behind: dict[str, tuple[str, str]], dedupe_ttl: int) -> int:
    """Idempotency records of the archived events Redis lost, for what is left of their
    time to live (the ones still alive in Redis are kept: SET NX)."""
    if not behind:
        return 0
    now_ms = int(time.time() * 1000)
    threads = list(behind)
    rows = conn.execute(
        "SELECT e.thread, e.id, e.payload::text FROM events e "
        "JOIN unnest(%s::text[], %s::numeric[]) AS u(t, k) ON e.thread = u.t AND e.key > u.k "
        "WHERE e.ts >= duologue_ts(%s)",
        (threads, [sort_key(behind[t][1]) for t in threads], now_ms - dedupe_ttl * 1000))
    restored = 0
    with client.pipeline(transaction=False) as pipe:
        for thread, event_id, payload in rows:
            event = decode_event(payload)
            if isinstance(event, ReadUpTo):
                continue  # a read receipt is idempotent by its position, not by an id
            left = dedupe_ttl - (now_ms - ms_of(event_id)) // 1000
            if left > 0:
                pipe.set(keys.dedupe(thread, author(event), event.client_msg_id), event_id,
                         ex=left, nx=True)
                restored += 1
        pipe.execute()
    return restored
