"""``duologue rebuild``: every projection table built afresh from the archive, online.

1. Fresh tables (``*_next``) are filled from the archive up to a watermark with COPY,
   folding each thread with the domain fold; indexes are built after the load.
2. Catch-up rounds apply what the live projector archived meanwhile.
3. The fresh tables are checked against the archive (events and messages per thread).
4. One short transaction takes the projection lock (the live projector pauses),
   applies the last few events, renames the fresh tables into place and grants
   the analysts read access. Readers see the old tables until then, the new after.

The watermark: under the exclusive projection lock no batch is in flight, so every
archive row numbered at or below the sequence's current value is committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg
import structlog

from domain.state import fold
from projector.entries import Entry, stored
from projector.project import project
from projector.rows import (
    BLOCK_COPY,
    MESSAGE_COPY,
    REACTION_COPY,
    RECEIPT_COPY,
    THREAD_COPY,
    block_copy,
    block_row,
    message_copy,
    message_row,
    reaction_copy,
    reaction_row,
    receipt_copy,
    receipt_row,
    thread_copy,
    thread_row,
)
from projector.tables import MAINTENANCE_LOCK, PROJECTION_LOCK, BusyError, Tables

log = structlog.get_logger("duologue.rebuild")
NEXT = Tables("messages_next", "threads_next", "read_receipts_next", "reactions_next",
              "blocks_next", archive=False)
NAMES = (("messages", "messages_next"), ("threads", "threads_next"),
         ("read_receipts", "read_receipts_next"), ("reactions", "reactions_next"),
         ("blocks", "blocks_next"))
# the order readers lock them in (gateway.read_model's queries name them in this order)
LIVE_NAMES = "threads, messages, read_receipts, reactions, blocks"
OLD_NAMES = ", ".join(f"{live}_old" for live, _ in NAMES)
INDEXES = (
    "ALTER TABLE messages_next ADD CONSTRAINT messages_next_pkey PRIMARY KEY (thread, key)",
    "ALTER TABLE threads_next ADD CONSTRAINT threads_next_pkey PRIMARY KEY (thread)",
    "ALTER TABLE read_receipts_next ADD CONSTRAINT read_receipts_next_pkey "
    "PRIMARY KEY (thread, reader)",
    "ALTER TABLE reactions_next ADD CONSTRAINT reactions_next_pkey "
    'PRIMARY KEY (thread, message_key, "user", emoji)',
    "ALTER TABLE blocks_next ADD CONSTRAINT blocks_next_pkey PRIMARY KEY (thread, by)",
    "CREATE INDEX threads_next_user_a ON threads_next (user_a, last_key DESC)",
    "CREATE INDEX threads_next_user_b ON threads_next (user_b, last_key DESC)",
    "CREATE INDEX threads_next_last_at ON threads_next (last_at)",
    # GET /v1/search (migration 0004)
    "CREATE INDEX messages_next_search ON messages_next "
    "USING gin (duologue_search_doc(thread, id, body)) WHERE deleted_at IS NULL",
)
Tick = Callable[[str, int], None]  # (phase, amount done)


class RebuildError(Exception):
    """The fresh tables did not match the archive; nothing was swapped."""


@dataclass
class Rebuilt:
    events: int
    caught_up: int
    threads: int


def rebuild(url: str, tick: Tick) -> Rebuilt:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (MAINTENANCE_LOCK,)).fetchone()
        if not row or not row[0]:
            raise BusyError("another rebuild, or a replay, is running: run `duologue rebuild` "
                            "again when it has finished")
        return _rebuild(conn, url, tick)  # the lock goes with the connection


def _rebuild(conn: psycopg.Connection, url: str, tick: Tick) -> Rebuilt:
    _prepare(conn)
    mark = watermark(conn)
    row = conn.execute("SELECT count(*) FROM events WHERE archived <= %s", (mark,)).fetchone()
    tick("total", int(row[0]) if row else 0)
    events = load(url, mark, tick)
    tick("index", 0)
    for statement in INDEXES:
        conn.execute(statement.encode())
    conn.execute(f"ANALYZE {', '.join(fresh for _, fresh in NAMES)}".encode())
    caught = 0
    for _ in range(20):  # catch up until a round has little left to do
        newer = watermark(conn)
        done = catch_up(conn, mark, newer)
        caught, mark = caught + done, newer
        tick("catch-up", done)
        if done < 1000:
            break
    check(conn, mark)
    tick("swap", 0)
    caught += swap(conn, mark)
    row = conn.execute("SELECT count(*) FROM threads").fetchone()
    return Rebuilt(events, caught, int(row[0]) if row else 0)


def _prepare(conn: psycopg.Connection) -> None:
    for live, fresh in NAMES:
        conn.execute(f"DROP TABLE IF EXISTS {fresh}, {live}_old".encode())
        conn.execute(f"CREATE TABLE {fresh} (LIKE {live} INCLUDING DEFAULTS)".encode())


def watermark(conn: psycopg.Connection) -> int:
    """The highest archive number below which every row is committed."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PROJECTION_LOCK,))
        return _sequence(conn)


def _sequence(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_archived_seq"
    ).fetchone()
    return int(row[0]) if row else 0


def load(url: str, mark: int, tick: Tick) -> int:
    """COPY the fold of every archived thread into the fresh tables.

    Three connections: one reads the archive through a server-side cursor while
    the other two each keep one COPY open (a connection runs one COPY at a time).
    """
    total = 0
    later = _Later()
    with psycopg.connect(url) as source_conn, psycopg.connect(url) as messages_conn, \
            psycopg.connect(url) as threads_conn, \
            source_conn.cursor(name="archive") as source:
        source.itersize = 20_000
        source.execute("SELECT thread, id, payload::text FROM events WHERE archived <= %s "
                       "ORDER BY thread, key", (mark,))
        with messages_conn.cursor().copy(MESSAGE_COPY.format("messages_next")) as messages, \
                threads_conn.cursor().copy(THREAD_COPY.format("threads_next")) as threads:
            for thread, entries in _by_thread(source):
                _copy_thread(thread, entries, messages.write_row, threads.write_row, later)
                total += len(entries)
                tick("load", len(entries))
        for statement, rows in ((RECEIPT_COPY.format("read_receipts_next"), later.receipts),
                                (REACTION_COPY.format("reactions_next"), later.reactions),
                                (BLOCK_COPY.format("blocks_next"), later.blocks)):
            with threads_conn.cursor().copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
        messages_conn.commit()
        threads_conn.commit()
    return total


def _by_thread(rows: psycopg.Cursor) -> Iterator[tuple[str, list[Entry]]]:
    current, entries = "", list[Entry]()
    for thread, event_id, payload in rows:
        if thread != current and entries:
            yield current, entries
            entries = []
        current = thread
        entry = stored(thread, event_id, payload)
        if isinstance(entry, Entry):
            entries.append(entry)
    if entries:
        yield current, entries


@dataclass
class _Later:
    """Rows copied once the messages and threads COPYs are done (one COPY per connection)."""

    receipts: list[tuple[object, ...]] = field(default_factory=list)
    reactions: list[tuple[object, ...]] = field(default_factory=list)
    blocks: list[tuple[object, ...]] = field(default_factory=list)


def _copy_thread(thread: str, entries: list[Entry], message: Callable[..., None],
                 head: Callable[..., None], later: _Later) -> None:
    state = fold(thread, ((e.id, e.event) for e in entries))
    for mid, m in state.messages.items():
        message(message_copy(message_row(thread, mid, m)))
    head(thread_copy(thread_row(thread, state.last_id, entries[0].id, len(entries))))
    for reader, up_to in state.receipts.items():
        later.receipts.append(receipt_copy(receipt_row(thread, reader, up_to, entries)))
    for key, added in state.reactions.items():
        later.reactions.append(reaction_copy(reaction_row(thread, key, added)))
    for by, blocked in state.blocks.items():
        later.blocks.append(block_copy(block_row(thread, by, blocked)))


def catch_up(conn: psycopg.Connection, low: int, high: int) -> int:
    """Apply archive rows numbered in (low, high] to the fresh tables."""
    if high <= low:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        return _apply_range(cur, low, high)


def _apply_range(cur: psycopg.Cursor, low: int, high: int) -> int:
    cur.execute("SELECT thread, id, payload::text FROM events WHERE archived > %s "
                "AND archived <= %s ORDER BY archived", (low, high))
    parsed = [stored(t, i, p) for t, i, p in cur.fetchall()]
    entries = [e for e in parsed if isinstance(e, Entry)]
    return project(cur, NEXT, entries)


def check(conn: psycopg.Connection, mark: int) -> None:
    """Every thread's event count, last key and message count agree with the archive."""
    row = conn.execute(
        "WITH e AS (SELECT thread, max(key) AS k, count(*) AS n, "
        "count(*) FILTER (WHERE kind = 'MessageSent') AS m FROM events "
        "WHERE archived <= %s GROUP BY thread), "
        "m AS (SELECT thread, count(*) AS m FROM messages_next GROUP BY thread) "
        "SELECT count(*), (array_agg(coalesce(e.thread, t.thread)))[1] FROM e "
        "FULL JOIN threads_next t USING (thread) LEFT JOIN m USING (thread) "
        "WHERE t.last_key IS DISTINCT FROM e.k OR t.events IS DISTINCT FROM e.n "
        "OR coalesce(m.m, 0) IS DISTINCT FROM e.m", (mark,)).fetchone()
    if row and row[0]:
        raise RebuildError(f"{row[0]} threads of the fresh tables differ from the archive, "
                           f"e.g. {row[1]}; the live tables were left as they were")


SWAP_ATTEMPTS = 10


def swap(conn: psycopg.Connection, mark: int) -> int:
    """Swap, retrying while long queries (an analyst's report) hold the live tables.

    Each attempt waits at most 3 s for its locks, so readers queued behind it wait no
    longer than that; between attempts everyone proceeds.
    """
    for attempt in range(1, SWAP_ATTEMPTS + 1):
        try:
            return _swap(conn, mark)
        except psycopg.errors.LockNotAvailable:
            log.warning("rebuild_swap_waiting_for_locks", attempt=attempt)
            time.sleep(1)
    raise RebuildError(f"could not lock the live tables for the swap in {SWAP_ATTEMPTS} "
                       "attempts (long-running queries hold them); the live tables were "
                       "left as they were: run `duologue rebuild` again")


def _swap(conn: psycopg.Connection, mark: int) -> int:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL lock_timeout = '3s'")
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (PROJECTION_LOCK,))
        done = _apply_range(cur, mark, _sequence(conn))
        # the order readers lock them in (LIVE_NAMES),
        # so a read between its first and its next table cannot deadlock with the swap
        cur.execute(f"LOCK TABLE {LIVE_NAMES} IN ACCESS EXCLUSIVE MODE".encode())
        for live, fresh in NAMES:
            for statement in (
                f"ALTER TABLE {live} RENAME TO {live}_old",
                f"ALTER TABLE {live}_old RENAME CONSTRAINT {live}_pkey TO {live}_old_pkey",
                f"ALTER TABLE {fresh} RENAME TO {live}",
                f"ALTER TABLE {live} RENAME CONSTRAINT {fresh}_pkey TO {live}_pkey",
            ):
                cur.execute(statement.encode())
        for index in ("user_a", "user_b", "last_at"):
            cur.execute(f"ALTER INDEX threads_{index} RENAME TO threads_old_{index}".encode())
            cur.execute(f"ALTER INDEX threads_next_{index} RENAME TO threads_{index}".encode())
        cur.execute("ALTER INDEX messages_search RENAME TO messages_old_search")
        cur.execute("ALTER INDEX messages_next_search RENAME TO messages_search")
        cur.execute(f"GRANT SELECT ON {LIVE_NAMES} TO duologue_analyst".encode())
    _drop_old(conn)
    return done


def _drop_old(conn: psycopg.Connection) -> None:
    """Drop the swapped-out tables, locking them in the readers' order: a read that began
    before the swap may still hold one and want the next. Best effort: the swap is done,
    and the next rebuild drops whatever is left."""
    for attempt in range(1, 6):
        try:
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '3s'")
                conn.execute(f"DROP TABLE {OLD_NAMES}".encode())
            return
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
            log.warning("rebuild_drop_waiting_for_readers", attempt=attempt)
            time.sleep(0.5)
    log.warning("rebuild_left_old_tables", tables=OLD_NAMES)
