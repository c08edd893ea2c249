"""Helpers of the presence tests: presence frames, threads made by a message, blocks
written as the record format has them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from adapters.record import BLOCKED, Keys
from tests.support import Client, thread_of

HIDDEN = {"online": False, "last_seen": None}


def presences(client: Client, user: str | None = None) -> list[dict[str, Any]]:
    """The presence frames received so far (about ``user``), not consumed."""
    return [f for f in client.frames
            if f.get("type") == "presence" and (user is None or f["user"] == user)]


async def next_presence(client: Client, user: str, timeout: float = 10.0,
                        **match: Any) -> dict[str, Any]:
    return await client.next("presence", timeout, user=user, **match)


async def quiet(client: Client, user: str | None = None, seconds: float = 1.0) -> None:
    """No presence frame (about ``user``) arrives within ``seconds``."""
    before = len(presences(client, user))
    await asyncio.sleep(seconds)
    assert presences(client, user)[before:] == [], presences(client, user)


async def befriend(client: Client, other: str) -> None:
    """A thread between the client's user and ``other`` (one message)."""
    answer = await client.say(other, "hello")
    assert answer["type"] == "ack", answer


async def block(aredis: Any, keys: Keys, by: str, other: str) -> None:
    """``by`` blocks the thread with ``other``, written as the append script would."""
    await aredis.hset(keys.state(thread_of(by, other)), BLOCKED + by, "1-0")


def now_ms() -> int:
    return int(time.time() * 1000)


def shape(frame: dict[str, Any]) -> dict[str, Any]:
    return {"online": frame["online"], "last_seen": frame["last_seen"]}
