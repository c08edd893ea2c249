"""The Postgres event archive as the gateway reads it: what Redis no longer holds.

``sync`` replays from here what the thread stream no longer has (below its ``lo``), and
an edit, delete or read receipt finds here a target that is only archived. Payloads are
re-encoded with the stream's own encoder, so a replayed event is byte for byte the frame
it was live. Without Postgres (unset or unreachable) the answer is ``unavailable``:
never a replay with a hole.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from domain.ids import sort_key
from gateway.errors import UnavailableError
from gateway.read_model import ReadModel
from schemas.events import decode_event, encode_event

NO_UPPER_BOUND = 10**40  # above every key: keys are numeric(40)

EVENTS_SQL = """
SELECT id, payload::text FROM events
 WHERE thread = %(thread)s AND key > %(after)s::numeric AND key < %(below)s::numeric
 ORDER BY key LIMIT %(limit)s
"""

# The target event (if archived), whether the projection has it deleted, the user's
# read receipt with the event that set it, and the user's reactions on the target:
# one round trip, primary keys only.
LOOKUP_SQL = """
SELECT (SELECT payload::text FROM events WHERE thread = %(thread)s AND key = %(key)s),
       (SELECT deleted_at IS NOT NULL FROM messages WHERE thread = %(thread)s AND key = %(key)s),
       r.up_to, r.event_id,
       (SELECT coalesce(json_agg(json_build_array(emoji, event_id) ORDER BY event_key), '[]')
          FROM reactions
         WHERE thread = %(thread)s AND message_key = %(key)s AND "user" = %(user)s)::text
FROM (VALUES (1)) AS one (x)
LEFT JOIN read_receipts AS r ON r.thread = %(thread)s AND r.reader = %(user)s
"""


@dataclass(frozen=True, slots=True)
class Archived:
    payload: str | None  # the target event, encoded as in the stream; None if not archived
    deleted: bool  # the projection has the target message deleted
    receipt: str | None  # the user's read receipt and the ReadUpTo that set it
    receipt_event: str | None
    reactions: dict[str, str]  # the user's reactions on the target: emoji -> ReactionAdded id


class Archive:
    def __init__(self, history: ReadModel | None) -> None:
        self.history = history

    def _require(self) -> ReadModel:
        if self.history is None:
            raise UnavailableError("older events are in the archive, and this gateway has "
                                   "no DATABASE_URL to read them")
        return self.history

    async def events(self, thread: str, after: str, below: str | None,
                     limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` archived (id, payload) with ``after`` < id < ``below``, in order."""
        rows = await self._require().fetch(EVENTS_SQL, {
            "thread": thread, "after": sort_key(after), "limit": limit,
            "below": NO_UPPER_BOUND if below is None else sort_key(below)})
        return [(event_id, _canonical(payload)) for event_id, payload in rows]

    async def lookup(self, thread: str, target: str, user: str) -> Archived:
        rows = await self._require().fetch(
            LOOKUP_SQL, {"thread": thread, "key": sort_key(target), "user": user})
        payload, deleted, receipt, receipt_event, reactions = rows[0]
        return Archived(None if payload is None else _canonical(payload), bool(deleted),
                        receipt, receipt_event, dict(msgspec.json.decode(reactions)))


def _canonical(payload: str) -> str:
    return encode_event(decode_event(payload)).decode()
