"""Pure rules: given events, when a command, then events or an error. No fixtures."""

from __future__ import annotations

import pytest

from domain.commands import DeleteMessage, EditMessage, MarkRead, SendMessage, decide, validate
from domain.errors import ForbiddenError, InvalidError, NotFoundError
from domain.ids import check_body, check_client_msg_id, event_key, participants, thread_id
from domain.state import fold
from schemas.events import MessageDeleted, MessageEdited, MessageSent, ReadUpTo

T = "dm:alice:bob"
HISTORY = [
    ("100-0", MessageSent(sender="alice", body="hi", client_msg_id="c1")),
    ("100-1", MessageSent(sender="bob", body="yo", client_msg_id="c2")),
    ("200-0", MessageEdited(sender="alice", target="100-0", body="hi!", client_msg_id="c3")),
    ("300-0", ReadUpTo(reader="bob", up_to="100-0")),
]


def test_thread_ids_are_canonical_and_bytewise_sorted():
    assert thread_id("bob", "alice") == "dm:alice:bob"
    assert thread_id("Zed", "alice") == "dm:Zed:alice"  # bytewise: uppercase first
    assert thread_id("alice", "alice") == "dm:alice:alice"
    assert participants("dm:alice:bob") == ("alice", "bob")
    for bad in ("dm:bob:alice", "dm:alice", "gm:alice:bob", "dm:al ice:bob", "dm:a:b:c"):
        with pytest.raises(InvalidError):
            participants(bad)
    with pytest.raises(InvalidError):
        thread_id("alice", "x" * 65)


def test_event_ids_sort_numerically_not_as_text():
    assert event_key("9-0") < event_key("10-0") < event_key("10-1")
    assert event_key("0") < event_key("0-1") and event_key("0-0") == (0, 0)
    bad_ids = ("", "1", "a-1", "1-", "-1", "1-1-1", "\uff11-1", f"{2**64}-0", "01-1", "1-01")
    for bad in bad_ids:
        with pytest.raises(InvalidError):
            event_key(bad)


def test_body_rules():
    assert check_body("é" * 10, 10) == "é" * 10  # code points, not bytes
    for bad in ("", "   \n\t", "a\x00b", "x" * 11):
        with pytest.raises(InvalidError):
            check_body(bad, 10)


def test_client_msg_id_rules():
    assert check_client_msg_id("!~" * 32)
    for bad in ("", "a b", "x" * 65, "é"):
        with pytest.raises(InvalidError):
            check_client_msg_id(bad)


def test_fold_applies_edits_deletes_and_forward_receipts():
    state = fold(T, [*HISTORY, ("400-0", MessageDeleted(sender="bob", target="100-1",
                                                          client_msg_id="c4")),
                     ("500-0", ReadUpTo(reader="bob", up_to="100-0"))])
    assert state.messages["100-0"].body == "hi!" and state.messages["100-0"].edited_at == 200
    assert state.messages["100-1"].deleted and state.messages["100-1"].body is None
    assert state.receipts == {"bob": "100-0"}
    assert state.last_id == "500-0"


def test_fold_ignores_an_event_replayed_at_or_below_last_id():
    once = fold(T, HISTORY)
    twice = fold(T, [*HISTORY, *HISTORY])
    assert once == twice


def test_edit_only_own_live_messages():
    state = fold(T, HISTORY)
    edit = EditMessage("alice", T, "100-0", "again", "c9")
    assert decide(state, edit) == [MessageEdited(sender="alice", target="100-0", body="again",
                                                 client_msg_id="c9")]
    with pytest.raises(ForbiddenError):
        decide(state, EditMessage("bob", T, "100-0", "mine now", "c9"))
    with pytest.raises(NotFoundError):
        decide(state, EditMessage("alice", T, "200-0", "edit of an edit", "c9"))
    deleted = fold(T, [*HISTORY, ("400-0", MessageDeleted(sender="alice", target="100-0",
                                                            client_msg_id="c5"))])
    with pytest.raises(NotFoundError):
        decide(deleted, DeleteMessage("alice", T, "100-0", "c9"))


def test_read_receipts_move_only_forward():
    state = fold(T, HISTORY)
    assert decide(state, MarkRead("bob", T, "100-1", "r1")) == [
        ReadUpTo(reader="bob", up_to="100-1")]
    assert decide(state, MarkRead("bob", T, "100-0", "r1")) == []
    with pytest.raises(NotFoundError):
        decide(state, MarkRead("bob", T, "999-0", "r1"))


def test_validate_membership_and_shapes():
    validate(SendMessage("alice", T, "hi", "c1"), 10)
    with pytest.raises(ForbiddenError):
        validate(SendMessage("carol", T, "hi", "c1"), 10)
    with pytest.raises(InvalidError):
        validate(SendMessage("alice", "dm:bob:alice", "hi", "c1"), 10)
    with pytest.raises(InvalidError):
        validate(DeleteMessage("alice", T, "not-an-id", "c1"), 10)
    with pytest.raises(InvalidError):
        validate(MarkRead("alice", T, "1-1", "has space"), 10)
