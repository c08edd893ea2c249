"""A Hypothesis state machine against two gateways: random sequences of valid and invalid
frames from three users on four sockets (one user on both gateways), checked after every
step against a simple model of protocol.md section 2:

- isolation: no frame about a thread reaches a non-participant;
- order: per socket and thread, live events in strictly increasing id order, each once;
- delivery: every acked event reaches every socket of both participants;
- no gap after `sync`: the replay is exactly the model's events after `after`, in order;
- idempotency: a resend with the same client_msg_id is acked `duplicate` with the first id
  and appends nothing (and so are a reaction already present and a receipt at or before
  the reader's, with the id of the event that stands);
- a reconnect's hello lists the user's threads with their newest acked id, newest first;
- refusals (bad_frame, unknown_type, invalid, forbidden) answer an error and the socket
  stays open.

Rate limits are off (conftest's LIMITS_OFF); ``DUOLOGUE_STATEFUL_EXAMPLES`` changes the
budget. Each example has fresh users, so the two gateways serve the whole test. Every
frame is also checked against /asyncapi.json by the shared client
(tests/contract_support.py).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from domain.ids import event_key
from tests.support import Client, GatewayProcess, thread_of, uid

EXAMPLES = int(os.environ.get("DUOLOGUE_STATEFUL_EXAMPLES", "300"))  # ~25 s on two cores
STEP_TIMEOUT = 10.0  # seconds a socket may take to see an answer or an event
REFUSALS = 18  # per socket and example: more than 20 within a minute closes it (1008)
FUTURE = "99999999999999-0"  # newer than any event: a sync answered recovered:false

BODIES = st.one_of(st.text(min_size=1, max_size=12), st.sampled_from(
    ["hello", " ", "\t\n", "a\x00b", "", "\u3000", "x" * 4001, "ok \x1f"]))
GARBAGE = [  # (frame, the error code it is answered with)
    ("not json", "bad_frame"), ("[1, 2]", "bad_frame"), ('{"type": 5}', "bad_frame"),
    ('{"type": "shout", "client_msg_id": "g"}', "unknown_type"),
    ('{"type": "send", "client_msg_id": "g"}', "bad_frame"),
    ('{"type": "sync", "thread": "dm:b:a", "after": "0"}', "invalid"),
    ('{"type": "sync", "thread": "SELF", "after": "01-0"}', "invalid"),
    ('{"type": "react", "thread": "SELF", "target": "1-0", "emoji": " ", "client_msg_id": "r"}',
     "invalid"),
]  # SELF: the sender's note-to-self thread


def valid_body(body: str) -> bool:
    return 0 < len(body) <= 4000 and not body.isspace() and "\x00" not in body


@dataclass
class Socket:
    client: Client
    read: int = 0  # frames already checked by the invariants
    live: dict[str, list[str]] = field(default_factory=dict)  # thread -> live event ids
    replayed: set[int] = field(default_factory=set)  # indexes of frames a sync replayed
    refusals: int = 0

    @property
    def user(self) -> str:
        return self.client.user


class Runner:
    """The event loop the machine's steps run on (Hypothesis calls rules synchronously)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def __call__(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        self.loop.close()


RUN: Runner | None = None
URLS: list[str] = []


class Conversations(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.users = [uid("s") for _ in range(3)]
        placement = [(0, 0), (0, 1), (1, 1), (2, 0)]  # (user, gateway): user 0 on both
        self.sockets = [Socket(run(Client.connect(URLS[g], self.users[u])))
                        for u, g in placement]
        self.events: dict[str, list[str]] = {}  # thread -> acked ids, in stream order
        self.acked: dict[tuple[str, str, str], tuple[str, str]] = {}  # (user, thread,
        # cmid) -> (event id, body)
        self.messages: dict[str, list[tuple[str, str]]] = {}  # thread -> (id, sender)
        # Event ids are per stream: two threads can hold the same id (two appends in one
        # millisecond), so what is known about a message is keyed by its thread too.
        self.deleted: set[tuple[str, str]] = set()  # (thread, id) of deleted messages
        self.reactions: dict[tuple[str, str, str, str], str] = {}  # (user, thread, target,
        # emoji) -> id
        self.receipts: dict[tuple[str, str], tuple[str, str]] = {}  # (reader, thread) ->
        # (up_to, id of its ReadUpTo)
        self.seq = 0

    def teardown(self) -> None:
        for socket in self.sockets:
            run(socket.client.close())

    # -- helpers ------------------------------------------------------------------
    def cmid(self) -> str:
        self.seq += 1
        return f"c-{self.seq}"

    def thread(self, a: int, b: int) -> str:
        return thread_of(self.users[a], self.users[b])

    def sockets_of(self, thread: str) -> list[Socket]:
        _, a, b = thread.split(":")
        return [s for s in self.sockets if s.user in (a, b)]

    def answer(self, socket: Socket, start: int, match: Callable[[dict], bool]) -> dict:
        return run(_first(socket.client, start, match))

    def command(self, socket: Socket, frame: dict[str, Any]) -> dict:
        """Send a command frame; its ack or error."""
        start = len(socket.client.frames)
        run(socket.client.send(frame))
        ref = frame["client_msg_id"]
        return self.answer(socket, start, lambda f: f.get("type") in ("ack", "error")
                           and f.get("ref") == ref)

    def appended(self, thread: str, event_id: str) -> None:
        """A new event: in the model, and soon on every socket of both participants."""
        ids = self.events.setdefault(thread, [])
        assert not ids or event_key(ids[-1]) < event_key(event_id), (ids[-1], event_id)
        ids.append(event_id)
        for socket in self.sockets_of(thread):
            self.answer(socket, 0, lambda f: f.get("type") == "event" and f["id"] == event_id
                        and f["thread"] == thread)

    def refused(self, socket: Socket, answer: dict, code: str) -> None:
        assert answer["type"] == "error" and answer["code"] == code, answer
        if code in ("bad_frame", "unknown_type", "invalid"):
            socket.refusals += 1

    # -- rules ----------------------------------------------------------------------
    @rule(who=st.integers(0, 3), to=st.integers(0, 2), body=BODIES, resend=st.booleans())
    def send(self, who: int, to: int, body: str, resend: bool) -> None:
        socket = self.sockets[who]
        sender = self.users.index(socket.user)
        thread = self.thread(sender, to)
        earlier = [k for k in self.acked if k[0] == socket.user and k[1] == thread]
        if resend and earlier:
            cmid = earlier[-1][2]
            first_id, body = self.acked[earlier[-1]]
        else:
            cmid, first_id = self.cmid(), None
        if not valid_body(body) and socket.refusals >= REFUSALS:
            return
        answer = self.command(socket, {"type": "send", "to": self.users[to], "body": body,
                                       "client_msg_id": cmid})
        if first_id is not None:  # idempotent: the first ack again, nothing appended
            assert answer["type"] == "ack" and answer["duplicate"], answer
            assert answer["id"] == first_id, (answer, first_id)
        elif not valid_body(body):
            self.refused(socket, answer, "invalid")
        else:
            assert answer["type"] == "ack" and not answer["duplicate"], answer
            assert answer["thread"] == thread
            self.acked[(socket.user, thread, cmid)] = (answer["id"], body)
            self.messages.setdefault(thread, []).append((answer["id"], socket.user))
            self.appended(thread, answer["id"])

    @rule(who=st.integers(0, 3), pick=st.integers(0, 1000),
          kind=st.sampled_from(["edit", "edit", "delete", "react", "react"]),
          emoji=st.sampled_from(["\U0001f44d", "\u2764\ufe0f", " "]))
    def change(self, who: int, pick: int, kind: str, emoji: str) -> None:
        """An edit, delete or reaction of a message of one of the user's threads."""
        socket = self.sockets[who]
        known = [(t, m) for t, ms in self.messages.items() for m in ms
                 if socket.user in t.split(":")[1:]]
        if not known or socket.refusals >= REFUSALS:
            return
        thread, (target, sender) = known[pick % len(known)]
        frame = {"type": kind, "thread": thread, "target": target,
                 "client_msg_id": self.cmid()}
        if kind == "edit":
            frame["body"] = "edited" if emoji != " " else " "
        if kind == "react":
            frame["emoji"] = emoji
        answer = self.command(socket, frame)
        if emoji == " " and kind != "delete":
            self.refused(socket, answer, "invalid")
        elif (thread, target) in self.deleted:  # someone else's: the contract orders no check
            other = kind != "react" and sender != socket.user and answer.get("code") != "not_found"
            self.refused(socket, answer, "forbidden" if other else "not_found")
        elif kind == "react":
            self.reacted(socket, answer, thread, (socket.user, thread, target, emoji))
        elif sender != socket.user:
            self.refused(socket, answer, "forbidden")
        else:
            assert answer["type"] == "ack" and not answer["duplicate"], answer
            if kind == "delete":
                self.deleted.add((thread, target))
            self.appended(thread, answer["id"])

    def reacted(self, socket: Socket, answer: dict, thread: str,
                reaction: tuple[str, str, str, str]) -> None:
        """A reaction already present is acked duplicate with the id that added it."""
        assert answer["type"] == "ack", answer
        if reaction in self.reactions:
            assert answer["duplicate"] and answer["id"] == self.reactions[reaction], answer
        else:
            assert not answer["duplicate"], answer
            self.reactions[reaction] = answer["id"]
            self.appended(thread, answer["id"])

    @rule(who=st.integers(0, 3), pick=st.integers(0, 1000))
    def read(self, who: int, pick: int) -> None:
        """A receipt up to an event of the thread; one at or before the reader's current
        one is acked duplicate with the id of the ReadUpTo that stands, appending nothing."""
        socket = self.sockets[who]
        known = [(t, i) for t, ids in self.events.items() for i in ids
                 if socket.user in t.split(":")[1:]]
        if not known:
            return
        thread, up_to = known[pick % len(known)]
        answer = self.command(socket, {"type": "read", "thread": thread, "up_to": up_to,
                                       "client_msg_id": self.cmid()})
        assert answer["type"] == "ack", answer
        current = self.receipts.get((socket.user, thread))
        if current is not None and event_key(up_to) <= event_key(current[0]):
            assert answer["duplicate"] and answer["id"] == current[1], (answer, current)
        else:
            assert not answer["duplicate"], answer
            self.receipts[(socket.user, thread)] = (up_to, answer["id"])
            self.appended(thread, answer["id"])

    @rule(who=st.integers(0, 3), gateway=st.integers(0, 1))
    def reconnect(self, who: int, gateway: int) -> None:
        """A socket closes and its user connects again: the hello lists every thread of
        the user that has events, with the newest acked id, newest first."""
        old = self.sockets[who]
        run(old.client.close())
        client = run(Client.connect(URLS[gateway], old.user))
        self.sockets[who] = Socket(client)
        listed = [(t["thread"], t["last_id"]) for t in client.hello["threads"]]
        expected = {t: ids[-1] for t, ids in self.events.items()
                    if old.user in t.split(":")[1:]}
        assert dict(listed) == expected and len(listed) == len(expected), (listed, expected)
        keys = [event_key(last) for _, last in listed]
        assert keys == sorted(keys, reverse=True), listed

    @rule(who=st.integers(0, 3))
    def write_to_a_stranger_thread(self, who: int) -> None:
        socket = self.sockets[who]
        others = [u for u in self.users if u != socket.user]
        thread = thread_of(*others) if len(set(others)) == 2 else thread_of(others[0], uid())
        answer = self.command(socket, {"type": "send", "thread": thread, "body": "psst",
                                       "client_msg_id": self.cmid()})
        self.refused(socket, answer, "forbidden")

    @rule(who=st.integers(0, 3), garbage=st.sampled_from(GARBAGE))
    def garbage(self, who: int, garbage: tuple[str, str]) -> None:
        socket = self.sockets[who]
        if socket.refusals >= REFUSALS:
            return
        text, code = garbage
        text = text.replace("SELF", thread_of(socket.user, socket.user))
        start = len(socket.client.frames)
        run(socket.client.ws.send(text))
        answer = self.answer(socket, start, lambda f: f.get("type") == "error")
        self.refused(socket, answer, code)

    @rule(who=st.integers(0, 3), to=st.integers(0, 2), pick=st.integers(0, 1000),
          future=st.booleans())
    def sync(self, who: int, to: int, pick: int, future: bool) -> None:
        socket = self.sockets[who]
        thread = self.thread(self.users.index(socket.user), to)
        ids = self.events.get(thread, [])
        after = FUTURE if future else (["0", *ids][pick % (len(ids) + 1)])
        start = len(socket.client.frames)
        run(socket.client.send({"type": "sync", "thread": thread, "after": after}))
        synced = self.answer(socket, start, lambda f: f.get("type") == "synced"
                             and f["thread"] == thread)
        end = socket.client.frames.index(synced, start)
        replay = [i for i in range(start, end) if socket.client.frames[i].get("type") == "event"
                  and socket.client.frames[i]["thread"] == thread]
        socket.replayed.update(replay)
        expected = [i for i in ids if event_key(i) > event_key(after)]
        assert [socket.client.frames[i]["id"] for i in replay] == expected, (after, ids)
        newest = ids[-1] if ids else None
        assert synced["last_id"] == (expected[-1] if expected else after), synced
        recovered = after == "0" if newest is None else event_key(after) <= event_key(newest)
        assert synced["recovered"] is recovered, (synced, after, newest)

    @rule(who=st.integers(0, 3), to=st.integers(0, 2))
    def typing(self, who: int, to: int) -> None:
        socket = self.sockets[who]
        thread = self.thread(self.users.index(socket.user), to)
        run(socket.client.send({"type": "typing", "thread": thread}))  # no answer

    # -- checks after every step ------------------------------------------------------
    @invariant()
    def sockets_stay_open_and_frames_keep_the_guarantees(self) -> None:
        for socket in self.sockets:
            assert not socket.client.reader.done(), f"closed: {socket.client.ws.close_code}"
            frames = socket.client.frames
            for index in range(socket.read, len(frames)):
                self.check_frame(socket, index, frames[index])
            socket.read = len(frames)

    def check_frame(self, socket: Socket, index: int, frame: dict) -> None:
        thread = frame.get("thread")
        if thread is not None:  # isolation
            assert socket.user in thread.split(":")[1:], (socket.user, frame)
        if frame.get("type") == "error":
            assert frame["code"] != "internal", frame
        if frame.get("type") != "event" or index in socket.replayed:
            return
        live = socket.live.setdefault(thread, [])
        assert not live or event_key(live[-1]) < event_key(frame["id"]), (live[-1], frame)
        assert frame["id"] in self.events.get(thread, ()), frame  # acked, once
        assert frame["id"] not in live[:-1], frame
        live.append(frame["id"])


def run(coroutine: Any) -> Any:
    """Run one step's coroutine on the test's loop."""
    assert RUN is not None
    return RUN(coroutine)


async def _first(client: Client, start: int, match: Callable[[dict], bool]) -> dict:
    """The first frame from index ``start`` on that matches (frames are not consumed)."""
    async with asyncio.timeout(STEP_TIMEOUT):
        while True:
            for frame in client.frames[start:]:
                if match(frame):
                    return frame
            assert not client.reader.done(), f"closed: {client.ws.close_code}"
            client.arrived.clear()
            await client.arrived.wait()


@pytest.fixture
def two_gateways(start_gateway: Callable[..., GatewayProcess]) -> Iterator[list[str]]:
    global RUN
    gateways = [start_gateway(), start_gateway()]  # every section 8 limit off (conftest)
    URLS[:] = [g.ws_url for g in gateways]
    RUN = Runner()
    yield URLS
    RUN.close()
    RUN = None


@pytest.mark.timeout(300)
def test_conversations_keep_the_guarantees(two_gateways: list[str]) -> None:
    machine = Conversations
    machine.TestCase.settings = settings(
        max_examples=EXAMPLES, stateful_step_count=60, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    machine.TestCase().runTest()

