"""The workload of the projector tests: valid commands (the gateway's rules: edit/delete
only one's own live message, read receipts only forward) over real WebSocket connections
to a real gateway, across many threads at once.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import websockets

from domain.ids import event_key, participants, thread_id
from tests.contract_support import check_frame
from tests.support import token, uid


class Conn:
    """One user's WebSocket: commands answered by ref; event frames are only counted."""

    def __init__(self, ws: websockets.ClientConnection, user: str) -> None:
        self.ws = ws
        self.user = user
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.events = 0
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, user: str) -> Conn:
        ws = await websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {token(user)}"},
            max_size=2**24)
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello", hello
        check_frame(hello)
        return cls(ws, user)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                check_frame(frame)  # against /asyncapi.json; a mismatch fails the test
                kind = frame.get("type")
                if kind == "event":
                    self.events += 1
                elif kind in ("ack", "error"):
                    waiter = self.waiting.pop(frame.get("ref"), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            for waiter in self.waiting.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError(f"{self.user}: socket closed"))

    async def command(self, frame: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        cmid = frame["client_msg_id"]
        waiter = asyncio.get_running_loop().create_future()
        self.waiting[cmid] = waiter
        await self.ws.send(json.dumps(frame))
        return await asyncio.wait_for(waiter, timeout)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.reader, return_exceptions=True)


@dataclass
class ThreadModel:
    """What the workload knows of one thread: enough to issue only valid commands."""

    thread: str
    users: tuple[str, str]
    ids: list[str] = field(default_factory=list)  # every event appended, in order
    live: dict[str, str] = field(default_factory=dict)  # message id -> sender, not deleted
    receipts: dict[str, str] = field(default_factory=dict)  # reader -> up_to
    sent: list[str] = field(default_factory=list)  # every MessageSent (replies may target any)
    reactions: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (msg, user)
    blocking: set[str] = field(default_factory=set)  # the participants whose block stands

    def blocked(self, user: str) -> bool:
        """Whether the other participant blocks the thread (``user`` may not write)."""
        return any(u != user for u in self.blocking)


BODIES = ("hi", "ünïcødé ✓", 'quote " and \\ backslash', "emoji 🎉🎉", "tab\tand\nnewline",
          "x" * 300, "  padded  ", "</script>", "{\"json\": true}")


EMOJI = ("👍", "❤️", "😂", "🎉", "👨‍👩‍👧", "+1", "ok")


class Workload:
    """Sends (some of them replies), edits, deletes, read receipts, reactions and blocks
    across many threads, all through a gateway.

    Commands of one thread are sequential (each waits for its ack), threads run
    concurrently; ``rate`` caps the commands per second over all threads.
    """

    def __init__(self, ws_url: str, users: int = 20, threads: int = 50,
                 seed: int | None = None) -> None:
        self.ws_url = ws_url
        self.rng = random.Random(seed)
        self.users = [uid("p") for _ in range(users)]
        pairs: set[tuple[str, str]] = {(self.users[0], self.users[0])}  # one note-to-self
        while len(pairs) < threads:
            a, b = self.rng.sample(self.users, 2)
            pairs.add(participants(thread_id(a, b)))
        self.models = [ThreadModel(thread_id(a, b), (a, b)) for a, b in sorted(pairs)]
        self.conns: dict[str, Conn] = {}
        self.appended = 0
        self.kinds: Counter[str] = Counter()
        self.retries = 0
        self._issued = 0
        self._seq = 0
        self._runs: list[asyncio.Future[Any]] = []

    async def __aenter__(self) -> Workload:
        conns = await asyncio.gather(*(Conn.open(self.ws_url, u) for u in self.users))
        self.conns = dict(zip(self.users, conns, strict=True))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for running in self._runs:  # a test failed while a run was in flight
            running.cancel()
        await asyncio.gather(*self._runs, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self.conns.values()), return_exceptions=True)

    async def run(self, total: int, rate: float | None = None) -> int:
        """Append ``total`` more events; return how many this call appended."""
        before, target = self.appended, self._issued + total
        started = time.monotonic()
        first = self._issued

        async def pace() -> bool:
            if self._issued >= target:
                return False
            n = self._issued - first
            self._issued += 1
            if rate:
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            return True

        async def drive(model: ThreadModel) -> None:
            while await pace():
                await self._step(model)

        running = asyncio.gather(*(drive(m) for m in self.models))
        self._runs.append(running)
        await running
        return self.appended - before

    def _cmid(self) -> str:
        self._seq += 1
        return f"w{self._seq}"

    def _body(self) -> str:
        return f"{self.rng.choice(BODIES)} #{self._seq}"

    def _choose(self, model: ThreadModel) -> tuple[str, str, dict[str, Any]]:
        """(user, kind, frame) of one command that the gateway must accept."""
        r, t = self.rng.random(), model.thread
        writers = [u for u in model.users if not model.blocked(u)]
        if model.live and r < 0.15:
            target = self.rng.choice(list(model.live))
            if not model.blocked(model.live[target]):
                return model.live[target], "edit", {
                    "type": "edit", "thread": t, "target": target, "body": self._body()}
        if model.live and r < 0.25:
            target = self.rng.choice(list(model.live))
            return model.live[target], "delete", {"type": "delete", "thread": t, "target": target}
        if model.ids and r < 0.45:
            reader = self.rng.choice(model.users)
            current = model.receipts.get(reader)
            later = [i for i in model.ids[-20:]
                     if current is None or event_key(i) > event_key(current)]
            if later:
                return reader, "read", {"type": "read", "thread": t,
                                        "up_to": self.rng.choice(later)}
        if model.live and writers and r < 0.55:
            target, user = self.rng.choice(list(model.live)), self.rng.choice(writers)
            mine = model.reactions.get((target, user), set())
            if len(mine) < 20:
                emoji = self.rng.choice([e for e in EMOJI if e not in mine] or ["🆗"])
                if emoji not in mine:
                    return user, "react", {"type": "react", "thread": t, "target": target,
                                           "emoji": emoji}
        present = [(m, u, e) for (m, u), es in model.reactions.items() for e in es]
        if present and r < 0.6:
            target, user, emoji = self.rng.choice(present)
            return user, "unreact", {"type": "unreact", "thread": t, "target": target,
                                     "emoji": emoji}
        if model.users[0] != model.users[1] and r < 0.62:
            user = self.rng.choice(model.users)
            kind = "unblock" if user in model.blocking else "block"
            return user, kind, {"type": kind, "thread": t}
        if not writers:  # both block: one of them lifts theirs
            user = self.rng.choice(model.users)
            return user, "unblock", {"type": "unblock", "thread": t}
        sender = self.rng.choice(writers)
        frame = {"type": "send", "thread": t, "body": self._body()}
        if model.sent and self.rng.random() < 0.2:
            frame["reply_to"] = self.rng.choice(model.sent)
        return sender, "send", frame

    async def _step(self, model: ThreadModel) -> None:
        user, kind, frame = self._choose(model)
        frame["client_msg_id"] = self._cmid()
        retried = False
        for _ in range(100):
            answer = await self.conns[user].command(frame)
            if answer["type"] == "ack":
                break
            if answer.get("code") != "unavailable":
                raise AssertionError(f"the gateway refused a valid command {frame}: {answer}")
            self.retries += 1  # the store was down: nothing appended, retry the same id
            retried = True
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"still unavailable: {frame}")
        # A retry may find its first attempt appended after all (the reply was lost).
        assert not answer["duplicate"] or retried, (frame, answer)
        event_id = answer["id"]
        model.ids.append(event_id)
        self.appended += 1
        self.kinds[kind] += 1
        if kind == "send":
            model.live[event_id] = user
            model.sent.append(event_id)
        elif kind == "delete":
            del model.live[frame["target"]]
            for key in [k for k in model.reactions if k[0] == frame["target"]]:
                del model.reactions[key]
        elif kind == "react":
            model.reactions.setdefault((frame["target"], user), set()).add(frame["emoji"])
        elif kind == "unreact":
            model.reactions[(frame["target"], user)].discard(frame["emoji"])
        elif kind == "block":
            model.blocking.add(user)
        elif kind == "unblock":
            model.blocking.discard(user)
        elif kind == "read":
            model.receipts[user] = frame["up_to"]
