"""``duologue replay --thread T [--from ID]``: re-project one thread from its log.

Runs in one transaction holding the projection lock exclusively, so the live
projector pauses for that thread's partition... and every other: the replay of
one thread takes milliseconds. The archive rows, messages, receipts and the
thread row of T are rewritten to equal the fold of the log; with ``--from`` only
events (and the messages they touch) at or after ID are rewritten. Idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import psycopg
import redis

from domain.ids import event_key, participants, sort_key
from domain.state import Message, fold
from duologue.keys import Keys
from projector.entries import Entry, stored
from projector.history import log_entries
from projector.project import archive_row, as_json, message_row, ms, receipt_setter
from projector.tables import LIVE, PROJECTION_LOCK
from schemas.events import MessageDeleted, MessageEdited

UPSERT_ARCHIVE = (
    "INSERT INTO events (thread, id, key, kind, payload, ts) "
    "SELECT t, i, k, kd, p::jsonb, duologue_ts(ms) FROM json_to_recordset(%s::json) "
    "AS u(t text, i text, k numeric, kd text, p json, ms int8) "
    "ON CONFLICT (thread, key) DO UPDATE SET id = EXCLUDED.id, kind = EXCLUDED.kind, "
    "payload = EXCLUDED.payload, ts = EXCLUDED.ts "
    "WHERE events.payload IS DISTINCT FROM EXCLUDED.payload OR events.id <> EXCLUDED.id")
SET_THREAD = (
    "INSERT INTO threads (thread, user_a, user_b, last_id, last_key, first_at, last_at, events) "
    "VALUES (%s, %s, %s, %s, duologue_event_key(%s), duologue_ts(%s), duologue_ts(%s), %s) "
    "ON CONFLICT (thread) DO UPDATE SET last_id = EXCLUDED.last_id, "
    "last_key = EXCLUDED.last_key, first_at = EXCLUDED.first_at, "
    "last_at = EXCLUDED.last_at, events = EXCLUDED.events")


@dataclass(frozen=True, slots=True)
class Replayed:
    thread: str
    events: int
    messages: int
    skipped: int  # log entries that do not decode (they stay out of the projection)


def replay(conn: psycopg.Connection, client: redis.Redis, keys: Keys, thread: str,
           start: str = "0") -> Replayed:
    a, b = participants(thread)
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
        _archive(cur, thread, recent, sort_key(start))
        _messages(cur, thread, state.messages, keep, sort_key(start))
        _receipts(cur, thread, state.receipts, entries)
        cur.execute(SET_THREAD, (thread, a, b, state.last_id, state.last_id,
                                 ms(entries[0].id), ms(state.last_id), len(entries)))
    return Replayed(thread, len(entries), len(keep), len(parsed) - len(entries))


def _forget(cur: psycopg.Cursor, thread: str) -> None:
    for table in ("messages", "read_receipts", "threads"):
        cur.execute(f"DELETE FROM {table} WHERE thread = %s", (thread,))


def _archive(cur: psycopg.Cursor, thread: str, recent: list[Entry], floor: int) -> None:
    cur.execute(UPSERT_ARCHIVE, (as_json([archive_row(e) for e in recent]),))
    cur.execute("DELETE FROM events WHERE thread = %s AND key >= %s AND NOT key = ANY(%s)",
                (thread, floor, [sort_key(e.id) for e in recent]))


def _messages(cur: psycopg.Cursor, thread: str, messages: Mapping[str, Message],
              keep: set[str], floor: int) -> None:
    rows: list[dict[str, object]] = []
    for mid, m in messages.items():
        if mid in keep:
            rows.append(message_row(thread, mid, m))
    if rows:
        cur.execute(LIVE.upsert_messages, (as_json(rows),))
    cur.execute("DELETE FROM messages WHERE thread = %s AND key >= %s AND NOT key = ANY(%s)",
                (thread, floor, [r["k"] for r in rows]))


def _receipts(cur: psycopg.Cursor, thread: str, receipts: Mapping[str, str],
              entries: list[Entry]) -> None:
    rows: list[dict[str, object]] = []
    for reader, up_to in receipts.items():
        setter = receipt_setter(entries, reader, up_to)
        rows.append({"t": thread, "r": reader, "u": up_to, "e": setter, "ms": ms(setter)})
    cur.execute("DELETE FROM read_receipts WHERE thread = %s AND NOT reader = ANY(%s)",
                (thread, [r["r"] for r in rows]))
    if rows:
        cur.execute(LIVE.upsert_receipts, (as_json(rows),))
