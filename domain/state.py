"""Thread state and the fold: ``fold_onto(state, [(id, event), ...]) -> state``.

The gateway folds only the slice a command needs (one target, one reader); the
projector folds a batch onto the slice of state it loaded from Postgres, and
``verify``/``rebuild`` fold whole histories. All of them use these rules.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from domain.ids import EventKey, event_key
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

MAX_EMOJI_PER_USER = 20  # distinct emoji one user may have on one message
ReactionKey = tuple[str, str, str]  # (message id, user, emoji)


def author(event: Event) -> str:
    """The participant whose command the event records."""
    match event:
        case ReadUpTo(reader=user) | ThreadBlocked(by=user) | ThreadUnblocked(by=user):
            return user
        case _:
            return event.sender


def references(event: Event) -> tuple[str, ...]:
    """The event ids an event points at."""
    match event:
        case MessageEdited(target=t) | MessageDeleted(target=t) | ReactionAdded(target=t) \
                | ReactionRemoved(target=t):
            return (t,)
        case ReadUpTo(up_to=up_to):
            return (up_to,)
        case MessageSent(reply_to=reply_to) if reply_to is not None:
            return (reply_to,)
    return ()


@dataclass(frozen=True, slots=True)
class Message:
    sender: str
    body: str | None
    sent_at: int
    edited_at: int | None = None
    deleted_at: int | None = None
    reply_to: str | None = None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


EMPTY: Mapping[Any, Any] = MappingProxyType({})  # read-only: one instance serves every state


def _empty() -> Mapping[Any, Any]:
    return EMPTY


@dataclass(frozen=True, slots=True)
class ThreadState:
    thread: str
    last_id: str = "0"
    messages: Mapping[str, Message] = field(default_factory=_empty)
    known: frozenset[str] = frozenset()
    receipts: Mapping[str, str] = field(default_factory=_empty)
    # (message, user, emoji) -> id of the ReactionAdded, for the reactions present
    reactions: Mapping[ReactionKey, str] = field(default_factory=_empty)
    blocks: Mapping[str, str] = field(default_factory=_empty)
    # user -> the ThreadBlocked that stands; user -> that user's last ThreadUnblocked
    unblocks: Mapping[str, str] = field(default_factory=_empty)

    def emoji_of(self, target: str, user: str) -> dict[str, str]:
        """``user``'s reactions on ``target``: emoji -> id of the ReactionAdded."""
        return {e: i for (t, u, e), i in self.reactions.items() if t == target and u == user}


class _Fold:
    """A mutable working copy, so folding n events costs O(n), not O(n^2)."""

    def __init__(self, state: ThreadState) -> None:
        self.state = state
        self.last: EventKey = event_key(state.last_id)
        self.last_id = state.last_id
        self.messages = dict(state.messages)
        self.known: set[str] = set()
        self.receipts = dict(state.receipts)
        self.reactions = dict(state.reactions)
        # message -> its reactions' keys: a delete or a cap check reads one message's
        # reactions, not the thread's (folding a whole history stays linear)
        self.on: dict[str, set[ReactionKey]] = defaultdict(set)
        for key in self.reactions:
            self.on[key[0]].add(key)
        self.blocks = dict(state.blocks)
        self.unblocks = dict(state.unblocks)

    def apply(self, event_id: str, event: Event) -> None:
        key = event_key(event_id)
        if key <= self.last:
            return  # at or below what the state already holds: changes nothing
        self._apply(event_id, key[0], event)
        self.last, self.last_id = key, event_id
        self.known.add(event_id)

    def _apply(self, event_id: str, ts: int, event: Event) -> None:
        match event:
            case MessageSent(sender=sender, body=body, reply_to=reply_to):
                self.messages[event_id] = Message(sender, body, ts, reply_to=reply_to)
            case MessageEdited(sender=sender, target=target, body=body):
                message = self._own(target, sender)
                if message is not None:
                    self.messages[target] = replace(message, body=body, edited_at=ts)
            case MessageDeleted(sender=sender, target=target):
                message = self._own(target, sender)
                if message is not None:
                    self.messages[target] = replace(message, body=None, deleted_at=ts)
                    for key in self.on.pop(target, ()):
                        del self.reactions[key]  # a deleted message keeps no reactions
            case ReadUpTo(reader=reader, up_to=up_to):
                current = self.receipts.get(reader)
                if current is None or event_key(up_to) > event_key(current):
                    self.receipts[reader] = up_to
            case ReactionAdded(sender=sender, target=target, emoji=emoji):
                self._react(event_id, sender, target, emoji)
            case ReactionRemoved(sender=sender, target=target, emoji=emoji):
                self._unreact((target, sender, emoji))
            case ThreadBlocked(by=by):
                self.blocks.setdefault(by, event_id)
            case ThreadUnblocked(by=by):
                self.blocks.pop(by, None)
                self.unblocks[by] = event_id

    def _unreact(self, key: ReactionKey) -> None:
        if self.reactions.pop(key, None) is not None:
            self.on[key[0]].discard(key)

    def _react(self, event_id: str, sender: str, target: str, emoji: str) -> None:
        """Add a reaction the rules allow: on a live message the state holds, not present
        yet, within the per-user cap (what ``decide`` checked, so the log agrees)."""
        message = self.messages.get(target)
        if message is None or message.deleted or (target, sender, emoji) in self.reactions:
            return
        mine = sum(1 for _, u, _ in self.on[target] if u == sender)
        if mine < MAX_EMOJI_PER_USER:
            self.reactions[(target, sender, emoji)] = event_id
            self.on[target].add((target, sender, emoji))

    def _own(self, target: str, sender: str) -> Message | None:
        """The live message ``sender`` may change; edits and deletes of others do nothing."""
        message = self.messages.get(target)
        if message is None or message.deleted or message.sender != sender:
            return None
        return message

    def result(self) -> ThreadState:
        if self.last_id == self.state.last_id:
            return self.state
        return replace(self.state, last_id=self.last_id,
                       messages=MappingProxyType(self.messages),
                       known=self.state.known | self.known,
                       receipts=MappingProxyType(self.receipts),
                       reactions=MappingProxyType(self.reactions),
                       blocks=MappingProxyType(self.blocks),
                       unblocks=MappingProxyType(self.unblocks))


def fold_onto(state: ThreadState, entries: Iterable[tuple[str, Event]]) -> ThreadState:
    """Apply events in order onto ``state`` (which may hold only a slice of a thread);
    events at or below ``state.last_id`` change nothing."""
    working = _Fold(state)
    for event_id, event in entries:
        working.apply(event_id, event)
    return working.result()


def fold(thread: str, entries: Iterable[tuple[str, Event]]) -> ThreadState:
    return fold_onto(ThreadState(thread), entries)
