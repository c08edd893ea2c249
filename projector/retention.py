"""Redis as the hot tier (protocol.md section 7): the owner of a partition removes from
Redis what the archive holds and clients rarely need.

- By count: a thread stream keeps its newest ``DUOLOGUE_RETAIN_EVENTS`` events plus any
  not yet archived. Threads the projector committed events of are trimmed every
  ``DUOLOGUE_RETENTION_EVERY`` seconds (default 10: "within a minute" with room to
  spare; 0 turns retention off), never above what they had archived.
- By idleness: a thread with no event for ``DUOLOGUE_RETAIN_IDLE`` seconds loses its
  stream and state (``idle.lua``); its participants' index entries stay. The projection
  says which threads went idle (``threads.last_at``); each partition log remembers up to
  when it swept (``projector_checkpoints.swept_to``).

Both only ever remove events the archive holds, and move the thread's ``lo`` (or, with
no stream left, its index entry) to say so, so replays read them from the archive.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import psycopg
import structlog

from adapters.record import Keys, lua
from adapters.redis_connect import SyncRedis, scripted
from domain.ids import event_key, participants, successor

if TYPE_CHECKING:
    from projector.ownership import Owned

log = structlog.get_logger("duologue.retention")
PER_CALL = 1000  # entries one trim call removes at most (a script blocks Redis)
PAGE = 500
SWEEP_PAGE = 10_000
TRIM_LUA = lua("projector", "trim.lua")
IDLE_LUA = lua("projector", "idle.lua")


class Retention:
    def __init__(self, keys: Keys, retain_events: int, retain_idle: float,
                 every: float) -> None:
        self.keys = keys
        self.retain_events = retain_events
        self.retain_idle = retain_idle
        self.every = every
        self.touched: dict[str, str] = {}  # thread -> its newest archived id
        self._lock = threading.Lock()
        self._next = time.monotonic() + every

    def archived(self, heads: Iterable[tuple[str, str]]) -> None:
        """Threads whose events up to these ids were just committed (from any lane)."""
        if not self.every:
            return
        with self._lock:
            for thread, last_id in heads:
                current = self.touched.get(thread)
                if current is None or event_key(last_id) > event_key(current):
                    self.touched[thread] = last_id

    def due(self) -> bool:
        return bool(self.every) and time.monotonic() >= self._next

    def run(self, conn: psycopg.Connection, client: SyncRedis,
            owned: dict[int, Owned]) -> None:
        """One pass over the owned partitions: trim the touched threads, sweep idle ones."""
        if not self.every:
            return
        self._next = time.monotonic() + self.every
        with self._lock:
            touched, self.touched = self.touched, {}
        mine = {t: i for t, i in touched.items() if self.keys.partition(t) in owned}
        trimmed = self.trim(client, mine)
        with client.pipeline(transaction=False) as pipe:  # exactly: a batch trims roughly
            for o in owned.values():
                if o.checkpoint != "0":
                    pipe.xtrim(o.stream, minid=successor(o.checkpoint), approximate=False)
            pipe.execute()
        swept = self.sweep(conn, client, owned) if owned else 0
        if trimmed or swept:
            log.info("retention", trimmed_events=trimmed, threads=len(mine), idle_threads=swept)

    def trim(self, client: SyncRedis, heads: dict[str, str]) -> int:
        """Trim each thread to its retained count, below its newest archived id."""
        script: Any = scripted(client, TRIM_LUA)
        removed, todo = 0, dict(heads)
        while todo:
            again = {}
            threads = list(todo)
            for start in range(0, len(threads), PAGE):
                page = threads[start:start + PAGE]
                with client.pipeline(transaction=False) as pipe:
                    for thread in page:
                        script(keys=[self.keys.stream(thread), self.keys.state(thread)],
                               args=[self.retain_events, todo[thread], PER_CALL,
                                     *participants(thread)], client=pipe)
                    counts: list[Any] = pipe.execute()
                removed += sum(int(n) for n in counts)
                again.update({t: todo[t] for t, n in zip(page, counts, strict=True)
                              if int(n) == PER_CALL})
            todo = again  # a long backlog (retention just enabled) goes PER_CALL at a time
        return removed

    def sweep(self, conn: psycopg.Connection, client: SyncRedis,
              owned: dict[int, Owned]) -> int:
        """Remove from Redis the owned threads idle since before the cutoff."""
        streams = [o.stream for o in owned.values()]
        row = conn.execute(
            "SELECT min(swept_to), now() - make_interval(secs => %s) "
            "FROM projector_checkpoints WHERE stream = ANY(%s)",
            (self.retain_idle, streams)).fetchone()
        if row is None or row[0] is None:
            return 0
        since, cutoff = row
        script: Any = scripted(client, IDLE_LUA)
        removed, after = 0, ""
        while True:
            rows = conn.execute(
                "SELECT thread, last_id, last_at FROM threads WHERE (last_at, thread) > (%s, %s) "
                "AND last_at < %s ORDER BY last_at, thread LIMIT %s",
                (since, after, cutoff, SWEEP_PAGE)).fetchall()
            idle = [(t, i) for t, i, _ in rows if self.keys.partition(t) in owned]
            for start in range(0, len(idle), PAGE):
                with client.pipeline(transaction=False) as pipe:
                    for thread, last_id in idle[start:start + PAGE]:
                        script(keys=[self.keys.stream(thread), self.keys.state(thread)],
                               args=[last_id], client=pipe)
                    removed += sum(int(n) for n in pipe.execute())
            if len(rows) < SWEEP_PAGE:
                break
            since, after = rows[-1][2], rows[-1][0]
        conn.execute("UPDATE projector_checkpoints SET swept_to = %s WHERE stream = ANY(%s)",
                     (cutoff, streams))
        return removed


def heads_of(entries: Iterable[Any]) -> dict[str, str]:
    """The newest id per thread among committed entries."""
    out: dict[str, str] = defaultdict(lambda: "0")
    for entry in entries:
        if event_key(entry.id) > event_key(out[entry.thread]):
            out[entry.thread] = entry.id
    return dict(out)
