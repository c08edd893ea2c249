"""``duologue replay --thread T [--from ID]``: re-project one thread from its history.

The history is the archive and the Redis stream merged (``projector.thread_log``): an
event Redis lost stays, an event not yet archived is archived, an archived copy that
differs from the stream's is rewritten from it. No archived event is ever deleted.
Runs in one transaction holding the projection lock exclusively, so the live
projector pauses meanwhile (the replay of one thread takes milliseconds). Messages,
receipts and the thread row of T are rewritten to equal the fold of the history; with
``--from`` only events (and the messages they touch) at or after ID are. Then, if the
stream lacks events the archive holds where replays expect the stream to be complete,
the stream's ``lo`` moves above them, so ``sync`` serves them from the archive again.
Idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from adapters.record import Keys
from adapters.redis_connect import SyncRedis, scripted
from domain.ids import event_key, participants, sort_key
from domain.state import Message, ThreadState, fold
from projector.entries import Entry, stored
from projector.rows import (
    archive_row,
    as_json,
    block_row,
    message_row,
    reaction_row,
    receipt_row,
    thread_row,
)
from projector.seal import REPAIR_LUA
from projector.tables import LIVE, MAINTENANCE_LOCK, PROJECTION_LOCK, REPAIR_ARCHIVE, BusyError
from projector.thread_log import log_entries, lost_from_stream
from schemas.events import MessageDeleted, MessageEdited


@dataclass(frozen=True, slots=True)
class Replayed:
    thread: str
    events: int
    messages: int
    skipped: int  # log entries that do not decode (they stay out of the projection)


def replay(conn: psycopg.Connection, client: SyncRedis, keys: Keys, thread: str,
           start: str = "0") -> Replayed:
    row = conn.execute("SELECT pg_try_advisory_lock_shared(%s)", (MAINTENANCE_LOCK,)).fetchone()
    if not row or not row[0]:
        raise BusyError("a rebuild is running, and its swap would undo this replay: run "
                        "`duologue replay` again when it has finished")
    try:
        done = _replay(conn, client, keys, thread, start)
        if done.events:
            _serve_lost_from_archive(conn, client, keys, thread)
        return done
    finally:
        conn.execute("SELECT pg_advisory_unlock_shared(%s)", (MAINTENANCE_LOCK,))


def _replay(conn: psycopg.Connection, client: SyncRedis, keys: Keys, thread: str,
            start: str) -> Replayed:
    floor = event_key(start)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL lock_timeout = '30s'")
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (PROJECTION_LOCK,))
        raw = log_entries(client, conn, keys, thread)
        parsed = [stored(thread, i, p) for i, p in raw]
        entries = [e for e in parsed if isinstance(e, Entry)]
        if not entries:
            _forget(cur, thread)
            return Replayed(thread, 0, 0, len(parsed))
        state = fold(thread, ((e.id, e.event) for e in entries))
        recent = [e for e in entries if event_key(e.id) >= floor]
        touched = {e.event.target for e in recent
                   if isinstance(e.event, MessageEdited | MessageDeleted)}
        keep = {m for m in state.messages if event_key(m) >= floor} | touched
        _archive(cur, recent)
        _messages(cur, thread, state.messages, keep, sort_key(start))
        _receipts(cur, thread, state.receipts, entries)
        _reactions_and_blocks(cur, thread, state)
        row = thread_row(thread, state.last_id, entries[0].id, len(entries))
        cur.execute(LIVE.replace_threads, (as_json([row]),))
    return Replayed(thread, len(entries), len(keep), len(parsed) - len(entries))


def _forget(cur: psycopg.Cursor, thread: str) -> None:
    for table in ("messages", "read_receipts", "reactions", "blocks", "threads"):
        cur.execute(f"DELETE FROM {table} WHERE thread = %s", (thread,))


def _archive(cur: psycopg.Cursor, recent: list[Entry]) -> None:
    """Archive what the archive lacks, rewrite what differs from the stream; delete nothing."""
    cur.execute(REPAIR_ARCHIVE, (as_json([archive_row(e) for e in recent]),))


def _serve_lost_from_archive(conn: psycopg.Connection, client: SyncRedis, keys: Keys,
                             thread: str) -> None:
    """Archived events missing from the stream where replays expect it complete (Redis lost
    them, or someone deleted them): move the stream's ``lo`` above them."""
    lost = lost_from_stream(conn, client, keys, thread)
    if lost:
        part = keys.partition(thread)
        a, b = participants(thread)
        script: Any = scripted(client, REPAIR_LUA)
        script(keys=[keys.stream(thread), keys.state(thread), keys.index(part, a),
                     keys.index(part, b)], args=[thread, lost[-1], "0"])


def _messages(cur: psycopg.Cursor, thread: str, messages: Mapping[str, Message],
              keep: set[str], floor: int) -> None:
    rows = [message_row(thread, mid, m) for mid, m in messages.items() if mid in keep]
    if rows:
        cur.execute(LIVE.upsert_messages, (as_json(rows),))
    cur.execute("DELETE FROM messages WHERE thread = %s AND key >= %s AND NOT key = ANY(%s)",
                (thread, floor, [r["k"] for r in rows]))


def _receipts(cur: psycopg.Cursor, thread: str, receipts: Mapping[str, str],
              entries: list[Entry]) -> None:
    rows = [receipt_row(thread, reader, up_to, entries) for reader, up_to in receipts.items()]
    cur.execute("DELETE FROM read_receipts WHERE thread = %s AND NOT reader = ANY(%s)",
                (thread, [r["r"] for r in rows]))
    if rows:
        cur.execute(LIVE.upsert_receipts, (as_json(rows),))


def _reactions_and_blocks(cur: psycopg.Cursor, thread: str, state: ThreadState) -> None:
    """The thread's reactions and blocks as the fold of its whole history has them."""
    cur.execute("DELETE FROM reactions WHERE thread = %s", (thread,))
    cur.execute("DELETE FROM blocks WHERE thread = %s", (thread,))
    reactions = [reaction_row(thread, key, added) for key, added in state.reactions.items()]
    if reactions:
        cur.execute(LIVE.upsert_reactions, (as_json(reactions),))
    blocks = [block_row(thread, by, blocked) for by, blocked in state.blocks.items()]
    if blocks:
        cur.execute(LIVE.upsert_blocks, (as_json(blocks),))
