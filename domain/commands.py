"""Commands and ``decide(state, command) -> events``.

``decide`` raises a ``DomainError`` or returns the events to append; an empty list
means "already done" (a read receipt at or before the reader's current one).
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.errors import ForbiddenError, NotFoundError
from domain.ids import (
    check_body,
    check_client_msg_id,
    check_event_id,
    check_participant,
    event_key,
)
from domain.state import Message, ThreadState
from schemas.events import Event, MessageDeleted, MessageEdited, MessageSent, ReadUpTo


@dataclass(frozen=True, slots=True)
class SendMessage:
    sender: str
    thread: str
    body: str
    client_msg_id: str


@dataclass(frozen=True, slots=True)
class EditMessage:
    sender: str
    thread: str
    target: str
    body: str
    client_msg_id: str


@dataclass(frozen=True, slots=True)
class DeleteMessage:
    sender: str
    thread: str
    target: str
    client_msg_id: str


@dataclass(frozen=True, slots=True)
class MarkRead:
    reader: str
    thread: str
    up_to: str
    client_msg_id: str


Command = SendMessage | EditMessage | DeleteMessage | MarkRead


def validate(command: Command, max_body: int) -> None:
    """Checks that need no state: ids, body, membership (``invalid``/``forbidden``)."""
    check_client_msg_id(command.client_msg_id)
    match command:
        case SendMessage(sender=user, body=body) | EditMessage(sender=user, body=body):
            check_participant(command.thread, user)
            check_body(body, max_body)
        case DeleteMessage(sender=user):
            check_participant(command.thread, user)
        case MarkRead(reader=user):
            check_participant(command.thread, user)
    match command:
        case EditMessage(target=target) | DeleteMessage(target=target):
            check_event_id(target)
        case MarkRead(up_to=up_to):
            check_event_id(up_to)


def _own_live_message(state: ThreadState, target: str, sender: str) -> Message:
    message = state.messages.get(target)
    if message is None or message.deleted:
        raise NotFoundError("no such message in this thread")
    if message.sender != sender:
        raise ForbiddenError("only the sender may change a message")
    return message


def decide(state: ThreadState, command: Command) -> list[Event]:
    """The events a valid command appends, given the thread state it needs."""
    match command:
        case SendMessage(sender=s, body=body, client_msg_id=c):
            return [MessageSent(sender=s, body=body, client_msg_id=c)]
        case EditMessage(sender=s, target=t, body=body, client_msg_id=c):
            _own_live_message(state, t, s)
            return [MessageEdited(sender=s, target=t, body=body, client_msg_id=c)]
        case DeleteMessage(sender=s, target=t, client_msg_id=c):
            _own_live_message(state, t, s)
            return [MessageDeleted(sender=s, target=t, client_msg_id=c)]
        case MarkRead(reader=r, up_to=up_to):
            if up_to not in state.known:
                raise NotFoundError("up_to is not an event of this thread")
            current = state.receipts.get(r)
            if current is not None and event_key(up_to) <= event_key(current):
                return []
            return [ReadUpTo(reader=r, up_to=up_to)]
    raise AssertionError(f"unknown command {command!r}")  # pragma: no cover
