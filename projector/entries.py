"""Partition-log entries, parsed and checked before anything is applied.

Each entry carries ``t`` (thread), ``i`` (the event's id in the thread stream) and
``e`` (the encoded event). Anything else is a poison entry: it goes to the dead
letters, with the reason, and the partition moves on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from domain.errors import DomainError
from domain.ids import check_participant, event_key, participants
from schemas.events import Event, MessageDeleted, MessageEdited, ReadUpTo, decode_event


@dataclass(frozen=True, slots=True)
class Entry:
    log_id: str
    thread: str
    id: str
    event: Event
    payload: str


@dataclass(frozen=True, slots=True)
class Poison:
    log_id: str
    reason: str
    thread: str | None = None
    id: str | None = None
    payload: str | None = None


def _text(fields: Mapping[bytes, bytes], name: bytes) -> str | None:
    raw = fields.get(name)
    if raw is None:
        return None
    return raw.decode("utf-8", errors="replace")


def parse(log_id: str, fields: Mapping[bytes, bytes] | None) -> Entry | Poison:
    if not fields:
        return Poison(log_id, "entry has no fields")
    thread, event_id, payload = _text(fields, b"t"), _text(fields, b"i"), _text(fields, b"e")
    if thread is None or event_id is None or payload is None:
        return Poison(log_id, "entry lacks one of t, i, e", thread, event_id, payload)
    try:
        participants(thread)
        if event_key(event_id) == (0, 0):
            raise DomainError("event id 0 is not an event")
        event = decode_event(payload)
        if any(isinstance(v, str) and "\x00" in v for v in msgspec.structs.astuple(event)):
            raise DomainError("a text field contains NUL, which Postgres cannot store")
        check_participant(thread, _author(event))
        for ref in _references(event):
            event_key(ref)
    except (DomainError, msgspec.DecodeError) as exc:
        return Poison(log_id, f"{type(exc).__name__}: {exc}", thread, event_id, payload)
    return Entry(log_id, thread, event_id, event, payload)


def stored(thread: str, event_id: str, payload: str) -> Entry | Poison:
    """Check an event read back from a thread stream or the archive (its own log id)."""
    return parse(event_id, {b"t": thread.encode(), b"i": event_id.encode(),
                            b"e": payload.encode()})


def _author(event: Event) -> str:
    return event.reader if isinstance(event, ReadUpTo) else event.sender


def _references(event: Event) -> tuple[str, ...]:
    match event:
        case MessageEdited(target=target) | MessageDeleted(target=target):
            return (target,)
        case ReadUpTo(up_to=up_to):
            return (up_to,)
    return ()
