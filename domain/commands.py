"""Commands and ``decide(state, command) -> events``.

``decide`` raises a ``DomainError`` or returns the events to append; an empty list
means "already done": a read receipt at or before the reader's current one, a reaction
already present, a block that stands, an unblock of a thread the user does not block.
``already_done`` names the event that did it (the id a duplicate ack carries).
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.errors import BlockedError, ForbiddenError, InvalidError, NotFoundError
from domain.ids import (
    check_body,
    check_client_msg_id,
    check_emoji,
    check_event_id,
    check_participant,
    event_key,
)
from domain.state import MAX_EMOJI_PER_USER, Message, ThreadState
from schemas.events import (
    Event,
    MessageDeleted,
    MessageEdited,
    MessageSent,
    ReactionAdded,
    ReactionRemoved,
    ReadUpTo,
    ThreadBlocked,
    ThreadUnblocked,
)


@dataclass(frozen=True, slots=True)
class SendMessage:
    sender: str
    thread: str
    body: str
    client_msg_id: str
    reply_to: str | None = None


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


@dataclass(frozen=True, slots=True)
class AddReaction:
    sender: str
    thread: str
    target: str
    emoji: str
    client_msg_id: str


@dataclass(frozen=True, slots=True)
class RemoveReaction:
    sender: str
    thread: str
    target: str
    emoji: str
    client_msg_id: str


@dataclass(frozen=True, slots=True)
class BlockThread:
    by: str
    thread: str
    client_msg_id: str


@dataclass(frozen=True, slots=True)
class UnblockThread:
    by: str
    thread: str
    client_msg_id: str


Command = (SendMessage | EditMessage | DeleteMessage | MarkRead | AddReaction | RemoveReaction
           | BlockThread | UnblockThread)


def actor(command: Command) -> str:
    """The user who issues the command."""
    match command:
        case MarkRead(reader=user) | BlockThread(by=user) | UnblockThread(by=user):
            return user
        case _:
            return command.sender


def target_of(command: Command) -> str | None:
    """The event the command points at (a message, a receipt's event), if any."""
    match command:
        case EditMessage(target=t) | DeleteMessage(target=t) | AddReaction(target=t) \
                | RemoveReaction(target=t):
            return t
        case MarkRead(up_to=up_to):
            return up_to
        case SendMessage(reply_to=reply_to):
            return reply_to
    return None


def validate(command: Command, max_body: int) -> None:
    """Checks that need no state: ids, body, emoji, membership (``invalid``/``forbidden``)."""
    check_client_msg_id(command.client_msg_id)
    other = check_participant(command.thread, actor(command))
    match command:
        case SendMessage(body=body) | EditMessage(body=body):
            check_body(body, max_body)
        case AddReaction(emoji=emoji) | RemoveReaction(emoji=emoji):
            check_emoji(emoji)
        case BlockThread() | UnblockThread() if other == actor(command):
            raise InvalidError("a note-to-self thread cannot be blocked")
    target = target_of(command)
    if target is not None:
        check_event_id(target)


def blocked_by_other(state: ThreadState, user: str) -> bool:
    """Whether the participant other than ``user`` blocks the thread."""
    other = check_participant(state.thread, user)
    return other != user and other in state.blocks


def _own_live_message(state: ThreadState, target: str, sender: str) -> Message:
    message = _live_message(state, target)
    if message.sender != sender:
        raise ForbiddenError("only the sender may change a message")
    return message


def _live_message(state: ThreadState, target: str) -> Message:
    message = state.messages.get(target)
    if message is None or message.deleted:
        raise NotFoundError("no such message in this thread")
    return message


def _not_blocked(state: ThreadState, user: str) -> None:
    if blocked_by_other(state, user):
        raise BlockedError("the other participant has blocked this thread")


def decide(state: ThreadState, command: Command) -> list[Event]:
    """The events a valid command appends, given the thread state it needs."""
    match command:
        case SendMessage(sender=s, body=body, client_msg_id=c, reply_to=reply_to):
            _not_blocked(state, s)
            if reply_to is not None and reply_to not in state.messages:
                raise NotFoundError("reply_to is not a message of this thread")
            return [MessageSent(sender=s, body=body, client_msg_id=c, reply_to=reply_to)]
        case EditMessage(sender=s, target=t, body=body, client_msg_id=c):
            _not_blocked(state, s)
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
        case AddReaction() | RemoveReaction():
            return _decide_reaction(state, command)
        case BlockThread(by=by, client_msg_id=c):
            return [] if by in state.blocks else [ThreadBlocked(by=by, client_msg_id=c)]
        case UnblockThread(by=by, client_msg_id=c):
            return [ThreadUnblocked(by=by, client_msg_id=c)] if by in state.blocks else []
    raise AssertionError(f"unknown command {command!r}")  # pragma: no cover


def _decide_reaction(state: ThreadState, command: AddReaction | RemoveReaction) -> list[Event]:
    s, t, emoji, c = command.sender, command.target, command.emoji, command.client_msg_id
    mine = state.emoji_of(t, s)
    if isinstance(command, RemoveReaction):
        if emoji not in mine:
            raise NotFoundError("no such reaction of yours on this message")
        return [ReactionRemoved(sender=s, target=t, emoji=emoji, client_msg_id=c)]
    _not_blocked(state, s)
    _live_message(state, t)
    if emoji in mine:
        return []
    if len(mine) >= MAX_EMOJI_PER_USER:
        raise InvalidError(f"at most {MAX_EMOJI_PER_USER} different emoji per user on one "
                           "message")
    return [ReactionAdded(sender=s, target=t, emoji=emoji, client_msg_id=c)]


def already_done(state: ThreadState, command: Command) -> str:
    """The id a duplicate ack carries when ``decide`` returned no event: the event that
    already did what the command asks ("0" for an unblock of a thread never blocked).
    A read receipt's is the ReadUpTo that set the current receipt, which the state
    slice does not hold: the caller knows it."""
    match command:
        case AddReaction(sender=s, target=t, emoji=emoji):
            return state.reactions[(t, s, emoji)]
        case BlockThread(by=by):
            return state.blocks[by]
        case UnblockThread(by=by):
            return state.unblocks.get(by, "0")
    raise AssertionError(f"{command!r} is never already done")  # pragma: no cover
