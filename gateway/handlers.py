"""One function per client frame: load, decide, append, answer."""

from __future__ import annotations

import asyncio
import contextlib
import random

from redis.exceptions import RedisClusterException, RedisError

from adapters.tokens import AuthError, read_token
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
    already_done,
    decide,
    target_of,
    validate,
)
from domain.errors import ForbiddenError, InvalidError, NotFoundError
from domain.ids import (
    BEFORE_FIRST,
    check_event_id,
    check_participant,
    event_key,
    ms_of,
    thread_id,
)
from gateway.backfill import replay_thread, schedule_catch_up
from gateway.connection import Connection
from gateway.decisions import assumed_for_send, fields_for, guard_for, state_for
from gateway.errors import FrameError, UnavailableError
from gateway.store import Appended, ArchivedTargetError, EventStore, GuardFailedError
from schemas.client import (
    Block,
    Delete,
    Edit,
    React,
    Read,
    Refresh,
    Send,
    Sync,
    Typing,
    Unblock,
    Unreact,
)
from schemas.events import MessageSent, decode_event
from schemas.server import Ack, Refreshed, Synced, TypingNotice, encode_frame

# decisions retried when a concurrent command changed the state (each of a user's sockets
# runs its commands one at a time, so contenders are few), with a short jittered pause
ATTEMPTS = 10


def ack(conn: Connection, ref: str, thread: str, event_id: str, duplicate: bool) -> None:
    ts = ms_of(event_id)
    conn.push(encode_frame(Ack(ref=ref, thread=thread, id=event_id, ts=ts, duplicate=duplicate)))


Change = Edit | Delete | Read | React | Unreact | Block | Unblock


def send_command(user: str, frame: Send) -> SendMessage:
    if frame.to is not None:
        thread = thread_id(user, frame.to)
    elif frame.thread is not None:
        thread = frame.thread
    else:
        raise FrameError("send needs `to` or `thread`", frame.client_msg_id)
    if frame.thread is not None and frame.thread != thread:
        raise InvalidError("`to` and `thread` name different threads")
    return SendMessage(user, thread, frame.body, frame.client_msg_id, frame.reply_to)


def change_command(user: str, frame: Change) -> Command:
    match frame:
        case Edit():
            return EditMessage(user, frame.thread, frame.target, frame.body, frame.client_msg_id)
        case Delete():
            return DeleteMessage(user, frame.thread, frame.target, frame.client_msg_id)
        case Read():
            return MarkRead(user, frame.thread, frame.up_to, frame.client_msg_id)
        case React():
            return AddReaction(user, frame.thread, frame.target, frame.emoji, frame.client_msg_id)
        case Unreact():
            return RemoveReaction(user, frame.thread, frame.target, frame.emoji,
                                  frame.client_msg_id)
        case Block():
            return BlockThread(user, frame.thread, frame.client_msg_id)
        case Unblock():
            return UnblockThread(user, frame.thread, frame.client_msg_id)


async def send_message(store: EventStore, command: SendMessage, max_body: int) -> Appended:
    """Validate, decide, append: the send of the WebSocket and of ``POST .../messages``."""
    validate(command, max_body)
    (event,) = decide(assumed_for_send(command), command)
    thread, sender, cmid = command.thread, command.sender, command.client_msg_id
    try:
        return await store.append(thread, sender, cmid, event, guard_for(command))
    except ArchivedTargetError:
        reply_to = command.reply_to or ""
        found = await store.archive.lookup(thread, reply_to, sender)
        if found.payload is None or not isinstance(decode_event(found.payload), MessageSent):
            raise NotFoundError("reply_to is not a message of this thread") from None
        return await store.append(thread, sender, cmid, event,
                                  guard_for(command, reply_checked=True))


async def execute(store: EventStore, command: Command, max_body: int) -> Appended:
    """Validate, load, decide, append a command that depends on the thread's state;
    decided again when a concurrent command changed that state meanwhile."""
    if isinstance(command, SendMessage):
        return await send_message(store, command, max_body)
    validate(command, max_body)
    user, fields = actor(command), fields_for(command)
    for attempt in range(ATTEMPTS):
        if attempt:
            await asyncio.sleep(random.uniform(0, 0.001 * attempt))
        loaded = await store.load(command.thread, user, command.client_msg_id,
                                  target_of(command), fields)
        if loaded.prior is not None:
            await store.confirm(command.thread, user, command.client_msg_id, loaded.prior)
            return Appended(loaded.prior, True)
        state, receipt_event = await state_for(store.archive, command, loaded)
        events = decide(state, command)
        if not events:
            done = receipt_event if isinstance(command, MarkRead) else already_done(state, command)
            return Appended(done or "0", True)
        try:
            return await store.append(command.thread, user, command.client_msg_id, events[0],
                                       guard_for(command, state, loaded.values))
        except GuardFailedError:
            continue
    raise UnavailableError("the thread changed too often meanwhile; retry")


async def send(store: EventStore, conn: Connection, frame: Send, max_body: int) -> None:
    command = send_command(conn.user, frame)
    appended = await send_message(store, command, max_body)
    ack(conn, command.client_msg_id, command.thread, appended.id, appended.duplicate)


async def change(store: EventStore, conn: Connection, frame: Change, max_body: int) -> None:
    command = change_command(conn.user, frame)
    appended = await execute(store, command, max_body)
    ack(conn, frame.client_msg_id, frame.thread, appended.id, appended.duplicate)


async def sync(store: EventStore, conn: Connection, frame: Sync) -> None:
    check_participant(frame.thread, conn.user)
    after = check_event_id(frame.after)
    try:
        async with conn.replaying:
            await _sync(store, conn, frame.thread, after)
    except (RedisError, RedisClusterException, OSError, UnavailableError):
        # The thread stays held; the catch-up replays it from what was delivered.
        conn.delivery.fail_replay(frame.thread)
        if conn.delivery.want_catch_up():
            schedule_catch_up(store, conn)
        raise


async def _sync(store: EventStore, conn: Connection, thread: str, after: str) -> None:
    conn.delivery.begin_replay(thread)
    last = (await store.page(thread, conn.user, "0", 1)).newest
    if last is None or event_key(after) > event_key(last):
        # nothing to replay; gapless only when the client had nothing either
        recovered = last is None and event_key(after) == BEFORE_FIRST
        conn.push(encode_frame(Synced(thread=thread, last_id=after, recovered=recovered)))
        conn.push_all(conn.delivery.end_replay(thread, last or "0"))
        return
    def synced(newest: str) -> None:  # before the live frames held during the replay
        conn.push(encode_frame(Synced(thread=thread, last_id=newest, recovered=True)))

    await replay_thread(store, conn, thread, after, synced)  # across archive and stream


async def typing(store: EventStore, conn: Connection, frame: Typing) -> None:
    other = check_participant(frame.thread, conn.user)
    if other == conn.user:
        return  # nobody else to tell in a note-to-self thread
    notice = encode_frame(TypingNotice(thread=frame.thread, user=conn.user))
    # typing is ephemeral: never an error
    with contextlib.suppress(RedisError, RedisClusterException, OSError):
        await store.typing(frame.thread, conn.user, other, f"{frame.thread} ~ {notice}")


def refresh(conn: Connection, frame: Refresh, secret: str) -> None:
    try:
        identity = read_token(frame.token, secret)
    except AuthError as exc:
        raise InvalidError(str(exc)) from None
    if identity.user != conn.user:
        raise ForbiddenError("the token is for another user")
    conn.expire_at(identity.exp)
    conn.push(encode_frame(Refreshed(exp=identity.exp)))
