"""Apply a batch of events to the archive and the projection, inside the caller's
transaction: lock the threads' rows, load the slice of state the batch touches,
fold the new events onto it with the domain fold, write back what changed.

Events at or below a thread's ``last_id`` are already projected and change nothing,
so applying the same entries twice has no second effect.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from domain.ids import event_key, sort_key
from domain.state import Message, ReactionKey, ThreadState, fold_onto, references
from projector.entries import Entry
from projector.rows import (
    Row,
    archive_row,
    as_json,
    block_row,
    message_row,
    reaction_row,
    receipt_row,
    thread_row,
)
from projector.tables import ARCHIVE, Tables
from schemas.events import (
    MessageDeleted,
    MessageEdited,
    ReactionAdded,
    ReactionRemoved,
    ReadUpTo,
    ThreadBlocked,
    ThreadUnblocked,
    decode_event,
)

_TARGETING = (MessageEdited, MessageDeleted, ReactionAdded, ReactionRemoved)
_REACTING = (MessageDeleted, ReactionAdded, ReactionRemoved)  # may change a message's reactions
_BLOCKING = (ThreadBlocked, ThreadUnblocked)


@dataclass
class _Rows:
    messages: list[Row] = field(default_factory=list)
    receipts: list[Row] = field(default_factory=list)
    threads: list[Row] = field(default_factory=list)
    reactions: list[Row] = field(default_factory=list)
    unreacted: list[Row] = field(default_factory=list)
    blocks: list[Row] = field(default_factory=list)
    unblocked: list[Row] = field(default_factory=list)


def archive(cur: psycopg.Cursor, entries: Sequence[Entry]) -> None:
    if entries:
        cur.execute(ARCHIVE, (as_json([archive_row(e) for e in entries]),))


Refusal = tuple[Entry, str]  # an entry the projection refuses, and why


def project(cur: psycopg.Cursor, tables: Tables, entries: Sequence[Entry],
            refused: list[Refusal] | None = None, applied: list[Entry] | None = None) -> int:
    """Archive (if the tables say so) and project; return how many events were new.

    With ``refused`` given, an entry at or below its thread's projected head that is not
    the very event archived under its id is not archived, and lands there with the reason
    (the caller buries it): Redis handed out an id twice, which only a lost write can do.
    With ``applied`` given, the entries projected for the first time are added to it (the
    live projector's webhook outbox, ``projector.webhook_outbox``).
    """
    if not entries:
        return 0
    by_thread: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        by_thread[entry.thread].append(entry)
    conn = cur.connection
    heads: dict[str, str] = dict(_fetch(conn, tables.heads, (sorted(by_thread),)))
    if refused is not None:
        refused += _refusals(conn, by_thread, heads)
        if refused:
            out = {id(entry) for entry, _ in refused}
            entries = [e for e in entries if id(e) not in out]
            by_thread = defaultdict(list)
            for entry in entries:
                by_thread[entry.thread].append(entry)
    fresh = {t: _above(es, heads.get(t, "0")) for t, es in by_thread.items()}
    fresh = {t: es for t, es in fresh.items() if es}
    loaded = _load_messages(conn, tables, fresh)
    receipts = _load_receipts(conn, tables, fresh)
    reactions = _load_reactions(conn, tables, fresh)
    blocks = _load_blocks(conn, tables, fresh)
    if tables.archive:
        # Nothing reads this result: in pipeline mode Postgres inserts the archive
        # while we fold below (a later fetch would wait for it, so fetches come first).
        with conn.cursor() as other:
            archive(other, entries)
    if not fresh:
        return 0
    if applied is not None:
        applied += [e for es in fresh.values() for e in es]
    rows = _Rows()
    for thread, events in fresh.items():
        state = ThreadState(thread, heads.get(thread, "0"), loaded.get(thread, {}),
                            receipts=receipts.get(thread, {}),
                            reactions=reactions.get(thread, {}), blocks=blocks.get(thread, {}))
        _diff(rows, state, events, new_thread=thread not in heads)
    _write(cur, tables, rows)
    return sum(len(es) for es in fresh.values())


def _above(entries: list[Entry], last_id: str) -> list[Entry]:
    """The entries the fold will apply: each above the head and above the one before it
    (an event handed over twice in one batch is counted once, like the fold applies it)."""
    last, out = event_key(last_id), []
    for entry in entries:
        key = event_key(entry.id)
        if key > last:
            out.append(entry)
            last = key
    return out


def _refusals(conn: psycopg.Connection, by_thread: dict[str, list[Entry]],
              heads: dict[str, str]) -> list[Refusal]:
    """Entries that are not after their thread's head and are not a second delivery of
    the event already archived (or earlier in this batch) under the same id."""
    out: list[Refusal] = []
    below: list[Entry] = []
    for thread, entries in by_thread.items():
        head = event_key(heads.get(thread, "0"))
        last, seen = head, {}
        for entry in entries:
            key = event_key(entry.id)
            if key > last:
                last, seen[entry.id] = key, entry.event
            elif key <= head:
                below.append(entry)
            elif seen.get(entry.id) != entry.event:
                out.append((entry, f"event {entry.id} of {thread} comes after a later "
                                   "event of its thread in the log"))
    if below:
        archived = {(t, i): p for t, i, p in _fetch(
            conn, "SELECT thread, id, payload::text FROM events JOIN unnest(%s::text[], "
            "%s::numeric[]) AS u(t, k) ON thread = u.t AND key = u.k",
            ([e.thread for e in below], [sort_key(e.id) for e in below]))}
        for entry in below:
            payload = archived.get((entry.thread, entry.id))
            if payload is None or decode_event(payload) != entry.event:
                held = "no event" if payload is None else "another event"
                out.append((entry, f"event id {entry.id} is at or below the projected head "
                                   f"{heads[entry.thread]} of {entry.thread} and the archive "
                                   f"holds {held} under it: Redis handed out an id twice "
                                   "(it lost acked writes)"))
    return out


def _fetch(conn: psycopg.Connection, query: Any, params: Sequence[object]) -> list[Any]:
    """One statement on a cursor of its own: in pipeline mode a cursor with two
    statements in flight can hand back the first one's rows."""
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def _load_messages(
    conn: psycopg.Connection, tables: Tables, fresh: dict[str, list[Entry]]
) -> dict[str, dict[str, Message]]:
    wanted = _targets(fresh, _TARGETING)
    found: dict[str, dict[str, Message]] = defaultdict(dict)
    if wanted:
        for thread, mid, sender, body, sent, edited, deleted, reply_to in _fetch(
                conn, tables.targets, ([t for t, _ in wanted], [sort_key(i) for _, i in wanted])):
            found[thread][mid] = Message(sender, body, sent, edited, deleted, reply_to)
    return found


def _targets(fresh: dict[str, list[Entry]], kinds: tuple[type, ...]) -> list[tuple[str, str]]:
    return sorted({(t, ref) for t, es in fresh.items() for e in es
                   if isinstance(e.event, kinds) for ref in references(e.event)})


def _load_reactions(
    conn: psycopg.Connection, tables: Tables, fresh: dict[str, list[Entry]]
) -> dict[str, dict[ReactionKey, str]]:
    """The reactions present on the messages a batch's reactions and deletes touch."""
    wanted = _targets(fresh, _REACTING)
    found: dict[str, dict[ReactionKey, str]] = defaultdict(dict)
    if wanted:
        for thread, mid, user, emoji, added in _fetch(
                conn, tables.reactions_of,
                ([t for t, _ in wanted], [sort_key(i) for _, i in wanted])):
            found[thread][(mid, user, emoji)] = added
    return found


def _load_blocks(
    conn: psycopg.Connection, tables: Tables, fresh: dict[str, list[Entry]]
) -> dict[str, dict[str, str]]:
    wanted = [t for t, es in fresh.items() if any(isinstance(e.event, _BLOCKING) for e in es)]
    found: dict[str, dict[str, str]] = defaultdict(dict)
    if wanted:
        for thread, by, blocked in _fetch(conn, tables.blocks_of, (wanted,)):
            found[thread][by] = blocked
    return found


def _load_receipts(
    conn: psycopg.Connection, tables: Tables, fresh: dict[str, list[Entry]]
) -> dict[str, dict[str, str]]:
    wanted = [t for t, es in fresh.items() if any(isinstance(e.event, ReadUpTo) for e in es)]
    found: dict[str, dict[str, str]] = defaultdict(dict)
    if wanted:
        for thread, reader, up_to in _fetch(conn, tables.readers, (wanted,)):
            found[thread][reader] = up_to
    return found


def _diff(rows: _Rows, state: ThreadState, events: list[Entry], new_thread: bool) -> None:
    after = fold_onto(state, ((e.id, e.event) for e in events))
    thread = state.thread
    for mid, message in after.messages.items():
        if state.messages.get(mid) != message:
            rows.messages.append(message_row(thread, mid, message))
    for reader, up_to in after.receipts.items():
        if state.receipts.get(reader) != up_to:
            rows.receipts.append(receipt_row(thread, reader, up_to, events))
    for key, added in after.reactions.items():
        if state.reactions.get(key) != added:
            rows.reactions.append(reaction_row(thread, key, added))
    for mid, user, emoji in state.reactions.keys() - after.reactions.keys():
        rows.unreacted.append({"t": thread, "k": sort_key(mid), "u": user, "e": emoji})
    for by, blocked in after.blocks.items():
        if state.blocks.get(by) != blocked:
            rows.blocks.append(block_row(thread, by, blocked))
    for by in state.blocks.keys() - after.blocks.keys():
        rows.unblocked.append({"t": thread, "b": by})
    first = events[0].id if new_thread else None
    rows.threads.append(thread_row(thread, after.last_id, first, len(events)))


def _write(cur: psycopg.Cursor, tables: Tables, rows: _Rows) -> None:
    if rows.messages:
        cur.execute(tables.upsert_messages, (as_json(rows.messages),))
    if rows.receipts:
        cur.execute(tables.upsert_receipts, (as_json(rows.receipts),))
    if rows.unreacted:
        cur.execute(tables.delete_reactions, (as_json(rows.unreacted),))
    if rows.reactions:
        cur.execute(tables.upsert_reactions, (as_json(rows.reactions),))
    if rows.unblocked:
        cur.execute(tables.delete_blocks, (as_json(rows.unblocked),))
    if rows.blocks:
        cur.execute(tables.upsert_blocks, (as_json(rows.blocks),))
    cur.execute(tables.upsert_threads, (as_json(rows.threads),))
