"""Commands against the thread state in Redis: what each one reads, the slice of state it
decides on (``domain.commands.decide``), and what the append script re-checks atomically
and then records (the thread state fields of ``adapters.record``).

The state fields are the decision's inputs, so the script's checks are compare-and-set
on them: if another command changed one in between, the append answers GUARD_FAILED
and the command is decided again on fresh state.
"""

from __future__ import annotations

from adapters.record import (
    ALL_ARCHIVED,
    BLOCKED,
    DELETED,
    NEW_ID,
    REACTIONS,
    RECEIPT,
    RECEIPT_EVENT,
    UNBLOCKED,
    decode_reactions,
    encode_reactions,
)
from domain.commands import (
    AddReaction,
    BlockThread,
    Command,
    DeleteMessage,
    EditMessage,
    MarkRead,
    RemoveReaction,
    SendMessage,
    UnblockThread,
    actor,
    target_of,
)
from domain.ids import check_participant, event_key, ms_of, participants
from domain.state import Message, ThreadState
from gateway.archive import Archive
from gateway.store import Check, Guard, Loaded
from schemas.events import MessageSent, decode_event


def reactions_field(target: str, user: str) -> str:
    return f"{REACTIONS}{target}:{user}"


def fields_for(command: Command) -> list[str]:
    """The thread state fields ``command`` decides on."""
    user = actor(command)
    other = check_participant(command.thread, user)
    match command:
        case EditMessage(target=t):
            return [DELETED + t, BLOCKED + other]
        case DeleteMessage(target=t):
            return [DELETED + t]
        case MarkRead():
            return [RECEIPT + user, RECEIPT_EVENT + user]
        case AddReaction(target=t):
            return [DELETED + t, BLOCKED + other, reactions_field(t, user)]
        case RemoveReaction(target=t):
            return [DELETED + t, reactions_field(t, user)]
        case BlockThread() | UnblockThread():
            return [BLOCKED + user, UNBLOCKED + user]
    return []


def _archived_only(target: str, lo: str | None) -> bool:
    return lo is not None and (lo == ALL_ARCHIVED or event_key(target) < event_key(lo))


async def state_for(archive: Archive, command: Command,
                    loaded: Loaded) -> tuple[ThreadState, str | None]:
    """The state slice ``command`` decides on, and the ReadUpTo that set the actor's
    receipt. A target older than the stream's history comes from the Postgres archive,
    with the receipt and reactions the thread state no longer holds for it."""
    thread, user = command.thread, actor(command)
    other = check_participant(thread, user)
    target = target_of(command)
    values = loaded.values or {}
    payload = loaded.payload
    deleted = values.get(DELETED + target) if target is not None else None
    receipt, receipt_event = values.get(RECEIPT + user), values.get(RECEIPT_EVENT + user)
    mine: dict[str, str] | None = None
    if target is not None and reactions_field(target, user) in values:
        mine = decode_reactions(values[reactions_field(target, user)])[1]
    if target is not None and _archived_only(target, loaded.lo):
        wants_reactions = isinstance(command, AddReaction | RemoveReaction) and mine is None
        wants_receipt = isinstance(command, MarkRead) and receipt is None
        if payload is None or wants_reactions or wants_receipt:
            found = await archive.lookup(thread, target, user)
            if payload is None and found.payload is not None:
                payload = found.payload
                deleted = deleted or (target if found.deleted else None)
            if receipt is None:
                receipt, receipt_event = found.receipt, found.receipt_event
            if mine is None:
                mine = found.reactions
    messages: dict[str, Message] = {}
    known: frozenset[str] = frozenset()
    if target is not None and payload is not None:
        known = frozenset({target})
        sent = decode_event(payload)
        if isinstance(sent, MessageSent):
            messages[target] = Message(sent.sender, sent.body, ms_of(target),
                                       deleted_at=None if deleted is None else ms_of(deleted),
                                       reply_to=sent.reply_to)
    state = ThreadState(
        thread, messages=messages, known=known,
        receipts={user: receipt} if receipt is not None else {},
        reactions={(target, user, e): i for e, i in (mine or {}).items()} if target else {},
        blocks={u: values[BLOCKED + u] for u in {user, other} if BLOCKED + u in values},
        unblocks={user: values[UNBLOCKED + user]} if UNBLOCKED + user in values else {})
    return state, receipt_event


def assumed_for_send(command: SendMessage) -> ThreadState:
    """A send decides without reading: the append script itself checks that the other
    participant does not block the thread and that the reply target is a MessageSent,
    so the decision is made on the state those checks insist on."""
    messages = {}
    if command.reply_to is not None:
        messages[command.reply_to] = Message(command.sender, None, ms_of(command.reply_to))
    return ThreadState(command.thread, messages=messages)


def guard_for(command: Command, state: ThreadState | None = None,
              values: dict[str, str] | None = None, reply_checked: bool = False) -> Guard:
    """What the append script re-checks atomically, and the state fields it records.
    ``state``/``values`` are what the decision was made on (reactions, unblock);
    ``reply_checked``: the archive already showed the reply target is a MessageSent."""
    values = values or {}
    user = actor(command)
    other = check_participant(command.thread, user)
    open_: Check = ("open", BLOCKED + other, "")
    match command:
        case SendMessage(reply_to=reply_to):
            sent: tuple[Check, ...] = () if reply_to is None or reply_checked else (
                ("sent", "", reply_to),)
            return Guard((open_, *sent))
        case EditMessage(target=t):
            return Guard((("absent", DELETED + t, ""), open_))
        case DeleteMessage(target=t):
            a, b = participants(command.thread)
            return Guard((("absent", DELETED + t, ""),),
                         ((DELETED + t, NEW_ID), (reactions_field(t, a), ""),
                          (reactions_field(t, b), "")))
        case MarkRead(up_to=up_to):
            return Guard((("after", RECEIPT + user, up_to),),
                         ((RECEIPT + user, up_to), (RECEIPT_EVENT + user, NEW_ID)))
        case AddReaction(target=t, emoji=emoji) | RemoveReaction(target=t, emoji=emoji):
            field = reactions_field(t, user)
            mine = dict(state.emoji_of(t, user)) if state is not None else {}
            if isinstance(command, AddReaction):
                mine[emoji] = NEW_ID
                checks: tuple[Check, ...] = (("absent", DELETED + t, ""), open_)
            else:
                mine.pop(emoji, None)
                checks = ()
            return Guard((*checks, ("equals", field, values.get(field, ""))),
                         ((field, encode_reactions(NEW_ID, mine)),))
        case BlockThread():
            return Guard((("absent", BLOCKED + user, ""),), ((BLOCKED + user, NEW_ID),))
        case UnblockThread():
            return Guard((("equals", BLOCKED + user, values.get(BLOCKED + user, "")),),
                         ((BLOCKED + user, ""), (UNBLOCKED + user, NEW_ID)))
    raise AssertionError(f"unknown command {command!r}")  # pragma: no cover
