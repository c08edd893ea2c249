"""The rows the projector writes, built in one place from entries and folded state.

``project`` (live batches), ``reproject`` (``duologue replay``) and ``rebuild`` all write
these: as JSON objects unpacked by ``json_to_recordset`` (the statements in
``projector/tables.py``), and ``rebuild`` as COPY tuples of the same rows. Times are
Unix milliseconds; Postgres turns them into timestamps (``duologue_ts``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import msgspec

from domain.ids import ms_of, participants, sort_key
from domain.state import Message, ReactionKey
from projector.entries import Entry
from schemas.events import ReadUpTo

Row = dict[str, object]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_encoder = msgspec.json.Encoder()


def as_json(rows: object) -> str:
    return _encoder.encode(rows).decode()


def archive_row(e: Entry) -> Row:
    return {"t": e.thread, "i": e.id, "k": sort_key(e.id), "kd": type(e.event).__name__,
            "p": msgspec.Raw(e.payload.encode()), "ms": ms_of(e.id)}


def message_row(thread: str, mid: str, m: Message) -> Row:
    return {"t": thread, "i": mid, "k": sort_key(mid), "s": m.sender, "b": m.body,
            "sa": m.sent_at, "ea": m.edited_at, "da": m.deleted_at, "rt": m.reply_to}


def reaction_row(thread: str, key: ReactionKey, added: str) -> Row:
    """A reaction present: ``key`` is (message id, user, emoji), ``added`` its ReactionAdded."""
    mid, user, emoji = key
    return {"t": thread, "i": mid, "k": sort_key(mid), "u": user, "e": emoji, "ev": added,
            "ek": sort_key(added), "ms": ms_of(added)}


def block_row(thread: str, by: str, blocked: str) -> Row:
    """``by`` blocks ``thread`` since the ThreadBlocked ``blocked``."""
    return {"t": thread, "b": by, "ev": blocked, "ms": ms_of(blocked)}


def receipt_row(thread: str, reader: str, up_to: str, events: Iterable[Entry]) -> Row:
    """``reader`` has read ``thread`` up to ``up_to``, set by the last such ReadUpTo of
    ``events``."""
    setter = receipt_setter(events, reader, up_to)
    return {"t": thread, "r": reader, "u": up_to, "e": setter, "ms": ms_of(setter)}


def thread_row(thread: str, last_id: str, first_id: str | None, events: int) -> Row:
    """A thread's head: ``events`` counts what this row adds (or sets, on replay);
    ``first_id`` is None when the row exists already (its ``first_at`` stays)."""
    a, b = participants(thread)
    return {"t": thread, "a": a, "b": b, "l": last_id,
            "f": 0 if first_id is None else ms_of(first_id), "ms": ms_of(last_id),
            "n": events}


def receipt_setter(events: Iterable[Entry], reader: str, up_to: str) -> str:
    """The id of the (last) ReadUpTo event that set ``reader``'s receipt to ``up_to``."""
    for entry in reversed(list(events)):
        event = entry.event
        if isinstance(event, ReadUpTo) and event.reader == reader and event.up_to == up_to:
            return entry.id
    raise AssertionError("a receipt changed without a ReadUpTo setting it")  # pragma: no cover


# -- the same rows as COPY tuples (rebuild) ------------------------------------------
MESSAGE_COPY = ("COPY {} (thread, id, key, sender, body, sent_at, edited_at, deleted_at, "
                "reply_to) FROM STDIN")
REACTION_COPY = ('COPY {} (thread, message_id, message_key, "user", emoji, reacted_at, '
                 "event_id, event_key) FROM STDIN")
BLOCK_COPY = "COPY {} (thread, by, since, event_id) FROM STDIN"
THREAD_COPY = ("COPY {} (thread, user_a, user_b, last_id, last_key, first_at, last_at, "
               "events) FROM STDIN")
RECEIPT_COPY = ("COPY {} (thread, reader, up_to, up_to_key, event_id, read_at) "
                "FROM STDIN")


def message_copy(row: Row) -> tuple[object, ...]:
    return (row["t"], row["i"], row["k"], row["s"], row["b"], _at(row["sa"]), _at(row["ea"]),
            _at(row["da"]), row["rt"])


def reaction_copy(row: Row) -> tuple[object, ...]:
    return (row["t"], row["i"], row["k"], row["u"], row["e"], _at(row["ms"]), row["ev"],
            row["ek"])


def block_copy(row: Row) -> tuple[object, ...]:
    return (row["t"], row["b"], _at(row["ms"]), row["ev"])


def thread_copy(row: Row) -> tuple[object, ...]:
    return (row["t"], row["a"], row["b"], row["l"], sort_key(str(row["l"])), _at(row["f"]),
            _at(row["ms"]), row["n"])


def receipt_copy(row: Row) -> tuple[object, ...]:
    return (row["t"], row["r"], row["u"], sort_key(str(row["u"])), row["e"], _at(row["ms"]))


def _at(ms: object) -> datetime | None:
    return EPOCH + timedelta(milliseconds=ms) if isinstance(ms, int) else None
