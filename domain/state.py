"""Thread state and the fold: ``evolve(state, id, event) -> state``.

The gateway folds only the slice a command needs (one target, one reader); the
projector folds whole histories. Both use this one function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from domain.ids import event_key
from schemas.events import Event, MessageDeleted, MessageEdited, MessageSent, ReadUpTo


@dataclass(frozen=True, slots=True)
class Message:
    sender: str
    body: str | None
    sent_at: int
    edited_at: int | None = None
    deleted: bool = False


def _empty() -> Mapping[str, object]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ThreadState:
    thread: str
    last_id: str = "0"
    messages: Mapping[str, Message] = field(default_factory=_empty)  # type: ignore[arg-type]
    known: frozenset[str] = frozenset()
    receipts: Mapping[str, str] = field(default_factory=_empty)  # type: ignore[arg-type]


def _ts(event_id: str) -> int:
    return event_key(event_id)[0]


def _with_message(state: ThreadState, event_id: str, message: Message) -> ThreadState:
    return replace(state, messages=MappingProxyType({**state.messages, event_id: message}))


def _apply(state: ThreadState, event_id: str, event: Event) -> ThreadState:
    match event:
        case MessageSent(sender=sender, body=body):
            return _with_message(state, event_id, Message(sender, body, _ts(event_id)))
        case MessageEdited(target=target, body=body) if target in state.messages:
            edited = replace(state.messages[target], body=body, edited_at=_ts(event_id))
            return _with_message(state, target, edited)
        case MessageDeleted(target=target) if target in state.messages:
            gone = replace(state.messages[target], body=None, deleted=True)
            return _with_message(state, target, gone)
        case ReadUpTo(reader=reader, up_to=up_to) if _forward(state, reader, up_to):
            return replace(state, receipts=MappingProxyType({**state.receipts, reader: up_to}))
    return state


def _forward(state: ThreadState, reader: str, up_to: str) -> bool:
    current = state.receipts.get(reader)
    return current is None or event_key(up_to) > event_key(current)


def evolve(state: ThreadState, event_id: str, event: Event) -> ThreadState:
    """Apply one event; events at or below ``state.last_id`` change nothing."""
    if event_key(event_id) <= event_key(state.last_id):
        return state
    state = _apply(state, event_id, event)
    return replace(state, last_id=event_id, known=state.known | {event_id})


def fold(thread: str, entries: Iterable[tuple[str, Event]]) -> ThreadState:
    state = ThreadState(thread)
    for event_id, event in entries:
        state = evolve(state, event_id, event)
    return state
