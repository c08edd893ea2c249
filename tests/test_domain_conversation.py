"""The domain rules of replies, reactions and blocks (protocol.md section 5), checked by
Hypothesis against a plain model: for any sequence of commands, ``decide`` on the fold of
the history answers what the contract says, and the fold of what was appended holds
exactly the model's state (so the gateway, which decides, and the projector, which folds,
can never disagree)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.commands import (
    AddReaction,
    BlockThread,
    Command,
    DeleteMessage,
    RemoveReaction,
    SendMessage,
    UnblockThread,
    already_done,
    decide,
    validate,
)
from domain.errors import BlockedError, DomainError, ForbiddenError, InvalidError, NotFoundError
from domain.ids import check_emoji
from domain.state import fold

A, B = "alice", "bob"
THREAD = "dm:alice:bob"
EMOJI = [f"e{n}" for n in range(22)]


@dataclass
class Model:
    messages: dict[str, tuple[str, bool]] = field(default_factory=dict)  # id -> sender, deleted
    reactions: dict[tuple[str, str, str], str] = field(default_factory=dict)
    blocks: dict[str, str] = field(default_factory=dict)
    unblocks: dict[str, str] = field(default_factory=dict)

    def expect(self, command: Command) -> type[DomainError] | str:
        """The error the contract gives, "append", or the id a duplicate ack carries."""
        match command:
            case SendMessage(sender=s, reply_to=r):
                if self.blocked(s):
                    return BlockedError
                return NotFoundError if r is not None and r not in self.messages else "append"
            case DeleteMessage(sender=s, target=t):
                if t not in self.messages or self.messages[t][1]:
                    return NotFoundError
                return ForbiddenError if self.messages[t][0] != s else "append"
            case AddReaction(sender=s, target=t, emoji=e):
                if self.blocked(s):
                    return BlockedError
                if t not in self.messages or self.messages[t][1]:
                    return NotFoundError
                if (t, s, e) in self.reactions:
                    return self.reactions[(t, s, e)]
                mine = sum(1 for (m, u, _) in self.reactions if m == t and u == s)
                return InvalidError if mine >= 20 else "append"
            case RemoveReaction(sender=s, target=t, emoji=e):
                return "append" if (t, s, e) in self.reactions else NotFoundError
            case BlockThread(by=by):
                return self.blocks.get(by, "append")
            case UnblockThread(by=by):
                return "append" if by in self.blocks else self.unblocks.get(by, "0")
        raise AssertionError(command)

    def blocked(self, user: str) -> bool:
        return any(u != user for u in self.blocks)

    def apply(self, command: Command, event_id: str) -> None:
        match command:
            case SendMessage(sender=s):
                self.messages[event_id] = (s, False)
            case DeleteMessage(target=t):
                self.messages[t] = (self.messages[t][0], True)
                for key in [k for k in self.reactions if k[0] == t]:
                    del self.reactions[key]
            case AddReaction(sender=s, target=t, emoji=e):
                self.reactions[(t, s, e)] = event_id
            case RemoveReaction(sender=s, target=t, emoji=e):
                del self.reactions[(t, s, e)]
            case BlockThread(by=by):
                self.blocks[by] = event_id
            case UnblockThread(by=by):
                del self.blocks[by]
                self.unblocks[by] = event_id


def commands() -> st.SearchStrategy[list[tuple[str, str, int, int]]]:
    kinds = st.sampled_from(["send", "reply", "delete", "react", "react", "react", "unreact",
                             "block", "unblock"])
    return st.lists(st.tuples(kinds, st.sampled_from([A, B]), st.integers(0, 30),
                              st.integers(0, 21)), max_size=120)


def build(kind: str, user: str, pick: int, emoji: int, ids: list[str], n: int) -> Command:
    target = ids[pick % len(ids)] if ids else f"{pick + 1}-0"
    cmid = f"c{n}"
    match kind:
        case "send":
            return SendMessage(user, THREAD, "hi", cmid)
        case "reply":
            return SendMessage(user, THREAD, "re", cmid, target if pick % 7 else "99-9")
        case "delete":
            return DeleteMessage(user, THREAD, target, cmid)
        case "react" | "unreact":
            cls = AddReaction if kind == "react" else RemoveReaction
            return cls(user, THREAD, target, EMOJI[emoji], cmid)
        case "block":
            return BlockThread(user, THREAD, cmid)
    return UnblockThread(user, THREAD, cmid)


@settings(max_examples=300, deadline=None)
@given(commands())
def test_decide_and_fold_agree_with_the_model(steps: list[tuple[str, str, int, int]]) -> None:
    model, history, ids = Model(), [], []
    for n, (kind, user, pick, emoji) in enumerate(steps):
        command = build(kind, user, pick, emoji, ids, n)
        validate(command, 4000)
        expected = model.expect(command)
        state = fold(THREAD, history)
        if isinstance(expected, type):
            with pytest.raises(expected):
                decide(state, command)
            continue
        events = decide(state, command)
        if expected != "append":
            assert events == [] and already_done(state, command) == expected, command
            continue
        (event,) = events
        event_id = f"{n + 1}-0"
        history.append((event_id, event))
        model.apply(command, event_id)
        if kind in ("send", "reply"):
            ids.append(event_id)
    final = fold(THREAD, history)
    assert dict(final.reactions) == model.reactions
    assert dict(final.blocks) == model.blocks
    assert {m: (x.sender, x.deleted) for m, x in final.messages.items()} == model.messages


@pytest.mark.parametrize("emoji", ["👍", "👨‍👩‍👧", "❤️", "x" * 16, "🇫🇷", "+1"])
def test_emoji_accepted(emoji: str) -> None:
    assert check_emoji(emoji) == emoji


@pytest.mark.parametrize("emoji", ["", "x" * 17, "a b", "\u00a0", "\u2028", "\x00", "\x1b",
                                   "\x85", "👍\u200b\n"])
def test_emoji_refused(emoji: str) -> None:
    with pytest.raises(InvalidError):
        check_emoji(emoji)


def test_a_note_to_self_thread_cannot_be_blocked() -> None:
    for cls in (BlockThread, UnblockThread):
        with pytest.raises(InvalidError):
            validate(cls(A, "dm:alice:alice", "c1"), 4000)
