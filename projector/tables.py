"""The projection's table names and the SQL that writes them, built once per name set.

The live projector writes ``messages``/``threads``/``read_receipts``; ``rebuild``
writes the same statements into its fresh tables before it swaps them in.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from psycopg import sql

PROJECTION_LOCK = 0x64756F70  # shared by every batch, exclusive for rebuild's swap
# Held by `rebuild` exclusively for its whole run and by `replay` shared: a replay during a
# rebuild would be undone by the swap, and two rebuilds would swap over each other.
MAINTENANCE_LOCK = 0x64756F72


class BusyError(Exception):
    """Another maintenance command holds the lock this one needs."""


_THREAD_ROWS = (
    "INSERT INTO {threads} AS th "
    "(thread, user_a, user_b, last_id, last_key, first_at, last_at, events) "
    "SELECT t, a, b, l, duologue_event_key(l), duologue_ts(f), duologue_ts(ms), n "
    "FROM json_to_recordset(%s::json) AS u(t text, a text, b text, l text, f int8, "
    "ms int8, n int8) "
    "ON CONFLICT (thread) DO UPDATE SET last_id = EXCLUDED.last_id, "
    "last_key = EXCLUDED.last_key, ")


@dataclass(frozen=True)
class Tables:
    messages: str = "messages"
    threads: str = "threads"
    receipts: str = "read_receipts"
    reactions: str = "reactions"
    blocks: str = "blocks"
    archive: bool = True  # also insert into the events archive

    def _fill(self, template: str) -> sql.Composed:
        return sql.SQL(template).format(
            messages=sql.Identifier(self.messages), threads=sql.Identifier(self.threads),
            receipts=sql.Identifier(self.receipts), reactions=sql.Identifier(self.reactions),
            blocks=sql.Identifier(self.blocks))

    @cached_property
    def heads(self) -> sql.Composed:
        return self._fill(
            "SELECT thread, last_id FROM {threads} WHERE thread = ANY(%s) "
            "ORDER BY thread FOR UPDATE")

    @cached_property
    def targets(self) -> sql.Composed:
        return self._fill(
            "SELECT m.thread, m.id, m.sender, m.body, duologue_ms(m.sent_at), "
            "duologue_ms(m.edited_at), duologue_ms(m.deleted_at), m.reply_to FROM {messages} m "
            "JOIN unnest(%s::text[], %s::numeric[]) AS u(t, k) "
            "ON m.thread = u.t AND m.key = u.k")

    @cached_property
    def readers(self) -> sql.Composed:
        return self._fill(
            "SELECT thread, reader, up_to FROM {receipts} WHERE thread = ANY(%s)")

    @cached_property
    def upsert_messages(self) -> sql.Composed:
        return self._fill(
            "INSERT INTO {messages} AS m "
            "(thread, id, key, sender, body, sent_at, edited_at, deleted_at, reply_to) "
            "SELECT t, i, k, s, b, duologue_ts(sa), duologue_ts(ea), duologue_ts(da), rt "
            "FROM json_to_recordset(%s::json) AS u(t text, i text, k numeric, s text, "
            "b text, sa int8, ea int8, da int8, rt text) "
            "ON CONFLICT (thread, key) DO UPDATE SET body = EXCLUDED.body, "
            "edited_at = EXCLUDED.edited_at, deleted_at = EXCLUDED.deleted_at")

    @cached_property
    def upsert_receipts(self) -> sql.Composed:
        return self._fill(
            "INSERT INTO {receipts} (thread, reader, up_to, up_to_key, event_id, read_at) "
            "SELECT t, r, u, duologue_event_key(u), e, duologue_ts(ms) "
            "FROM json_to_recordset(%s::json) AS x(t text, r text, u text, e text, ms int8) "
            "ON CONFLICT (thread, reader) DO UPDATE SET up_to = EXCLUDED.up_to, "
            "up_to_key = EXCLUDED.up_to_key, event_id = EXCLUDED.event_id, "
            "read_at = EXCLUDED.read_at")

    @cached_property
    def reactions_of(self) -> sql.Composed:
        """The reactions on some messages: (thread[], message key[])."""
        return self._fill(
            'SELECT r.thread, r.message_id, r."user", r.emoji, r.event_id FROM {reactions} r '
            "JOIN unnest(%s::text[], %s::numeric[]) AS u(t, k) "
            "ON r.thread = u.t AND r.message_key = u.k")

    @cached_property
    def blocks_of(self) -> sql.Composed:
        return self._fill("SELECT thread, by, event_id FROM {blocks} WHERE thread = ANY(%s)")

    @cached_property
    def upsert_reactions(self) -> sql.Composed:
        return self._fill(
            'INSERT INTO {reactions} (thread, message_id, message_key, "user", emoji, '
            "reacted_at, event_id, event_key) "
            "SELECT t, i, k, u, e, duologue_ts(ms), ev, ek "
            "FROM json_to_recordset(%s::json) AS x(t text, i text, k numeric, u text, e text, "
            "ev text, ek numeric, ms int8) "
            'ON CONFLICT (thread, message_key, "user", emoji) DO UPDATE SET '
            "reacted_at = EXCLUDED.reacted_at, event_id = EXCLUDED.event_id, "
            "event_key = EXCLUDED.event_key")

    @cached_property
    def delete_reactions(self) -> sql.Composed:
        return self._fill(
            "DELETE FROM {reactions} r USING json_to_recordset(%s::json) "
            "AS x(t text, k numeric, u text, e text) "
            'WHERE r.thread = x.t AND r.message_key = x.k AND r."user" = x.u AND r.emoji = x.e')

    @cached_property
    def upsert_blocks(self) -> sql.Composed:
        return self._fill(
            "INSERT INTO {blocks} (thread, by, since, event_id) "
            "SELECT t, b, duologue_ts(ms), ev "
            "FROM json_to_recordset(%s::json) AS x(t text, b text, ev text, ms int8) "
            "ON CONFLICT (thread, by) DO UPDATE SET since = EXCLUDED.since, "
            "event_id = EXCLUDED.event_id")

    @cached_property
    def delete_blocks(self) -> sql.Composed:
        return self._fill(
            "DELETE FROM {blocks} x USING json_to_recordset(%s::json) AS u(t text, b text) "
            "WHERE x.thread = u.t AND x.by = u.b")

    @cached_property
    def upsert_threads(self) -> sql.Composed:
        """Thread heads of a batch: ``events`` adds up, ``first_at`` stays."""
        return self._fill(_THREAD_ROWS + "last_at = EXCLUDED.last_at, "
                          "events = th.events + EXCLUDED.events")

    @cached_property
    def replace_threads(self) -> sql.Composed:
        """The thread rows as given (``duologue replay``): counts and first time too."""
        return self._fill(_THREAD_ROWS + "first_at = EXCLUDED.first_at, "
                          "last_at = EXCLUDED.last_at, events = EXCLUDED.events")

LIVE = Tables()

# Bulk rows travel as one JSON array (encoded by msgspec in C, unpacked by Postgres in
# C): several times faster than psycopg's per-element array dumping.
_INSERT_ARCHIVE = (
    "INSERT INTO events (thread, id, key, kind, payload, ts) "
    "SELECT t, i, k, kd, p::jsonb, duologue_ts(ms) "
    "FROM json_to_recordset(%s::json) AS u(t text, i text, k numeric, kd text, p json, ms int8) ")
ARCHIVE = sql.SQL(_INSERT_ARCHIVE + "ON CONFLICT DO NOTHING")
# `duologue replay`: archive what is missing, rewrite a copy that differs from the stream's
REPAIR_ARCHIVE = sql.SQL(
    _INSERT_ARCHIVE + "ON CONFLICT (thread, key) DO UPDATE SET id = EXCLUDED.id, "
    "kind = EXCLUDED.kind, payload = EXCLUDED.payload, ts = EXCLUDED.ts "
    "WHERE events.payload IS DISTINCT FROM EXCLUDED.payload OR events.id <> EXCLUDED.id")
