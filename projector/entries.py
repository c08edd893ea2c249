"""Partition-log entries, parsed and checked before anything is applied.

Each entry carries ``t`` (thread), ``i`` (the event's id in the thread stream) and
``e`` (the encoded event). Anything else is a poison entry: it goes to the dead
letters, with the reason, and the partition moves on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from adapters.record import B_LOG_EVENT, B_LOG_ID, B_LOG_THREAD, LOG_EVENT, LOG_ID, LOG_THREAD
from domain.errors import DomainError
from domain.ids import check_participant, event_key, participants
from domain.state import author, references
from schemas.events import Event, decode_event


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
    """Check a partition log entry (``adapters.record.log_fields``)."""
    if not fields:
        return Poison(log_id, "entry has no fields")
    thread, event_id = _text(fields, B_LOG_THREAD), _text(fields, B_LOG_ID)
    payload = _text(fields, B_LOG_EVENT)
    if thread is None or event_id is None or payload is None:
        return Poison(log_id, f"entry lacks one of {LOG_THREAD}, {LOG_ID}, {LOG_EVENT}",
                      thread, event_id, payload)
    return _checked(log_id, thread, event_id, payload)


def stored(thread: str, event_id: str, payload: str) -> Entry | Poison:
    """Check an event read back from a thread stream or the archive (its own log id)."""
    return _checked(event_id, thread, event_id, payload)


def _checked(log_id: str, thread: str, event_id: str, payload: str) -> Entry | Poison:
    try:
        participants(thread)
        if event_key(event_id) == (0, 0):
            raise DomainError("event id 0 is not an event")
        event = decode_event(payload)
        if any(isinstance(v, str) and "\x00" in v for v in msgspec.structs.astuple(event)):
            raise DomainError("a text field contains NUL, which Postgres cannot store")
        check_participant(thread, author(event))
        for ref in references(event):
            event_key(ref)
    except (DomainError, msgspec.DecodeError) as exc:
        return Poison(log_id, f"{type(exc).__name__}: {exc}", thread, event_id, payload)
    return Entry(log_id, thread, event_id, event, payload)
