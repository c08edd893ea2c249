"""One WebSocket connection's delivery state.

- ``frames``: the bounded outbound queue, drained by the connection's sender task;
  a live frame that finds it full closes the socket with 1013 (slow consumer).
- ``last``: per thread, the newest event id delivered, so live frames are delivered
  once and in order.
- ``held``: threads being replayed; their live frames wait there and are released,
  deduplicated, after the replay.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from domain.ids import EventKey, event_key

SLOW_CONSUMER = 1013
POLICY = 1008
REFUSAL_LIMIT = 20  # more refusals than this within REFUSAL_WINDOW seconds close the socket
REFUSAL_WINDOW = 60.0


class Connection:
    def __init__(self, user: str, capacity: int) -> None:
        self.user = user
        self.capacity = capacity
        self.frames: deque[str] = deque()
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.last: dict[str, EventKey] = {}
        self.held: dict[str, list[tuple[EventKey, str]]] = {}
        self.replaying = asyncio.Lock()
        self.close_code: int | None = None
        self.close_reason = ""
        self.flush_before_close = False
        self.inflight = 0
        self.draining = False
        self.delivered = 0
        self.received = 0
        self.pending: list[tuple[str, str, str]] | None = []
        self.started = False
        self.gap = False
        self.subscribing = False
        self.stale: set[str] = set()
        self.catching_up: asyncio.Task[None] | None = None
        self.catch_up_again = False
        self.expiry: asyncio.TimerHandle | None = None
        self.refusals: deque[float] | None = None

    def expire_at(self, exp: int) -> None:
        """Close with 1008 when the token expires (re-armed by ``refresh``)."""
        if self.expiry is not None:
            self.expiry.cancel()
        delay = max(0.0, exp - time.time())
        loop = asyncio.get_running_loop()
        self.expiry = loop.call_later(delay, self.close, POLICY, "token expired")

    def refused(self) -> bool:
        """Count a refused frame; True when the socket must close with 1008."""
        now = time.monotonic()
        if self.refusals is None:
            self.refusals = deque()
        self.refusals.append(now)
        while self.refusals[0] < now - REFUSAL_WINDOW:
            self.refusals.popleft()
        return len(self.refusals) > REFUSAL_LIMIT

    def cleanup(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
        if self.catching_up is not None:
            self.catching_up.cancel()

    def start(self, threads: list[tuple[str, str]]) -> bool:
        """``hello`` was queued: its last ids are the floor; release early live frames.

        True when a resubscription happened meanwhile: the connection stays paused
        and the caller must schedule a catch-up.
        """
        for thread, last_id in threads:
            self.last[thread] = event_key(last_id)
        self.started = True
        if self.gap:
            return True
        self.resume()
        return False

    def pause(self) -> None:
        """Buffer every live frame (a gap may precede them) until ``resume``."""
        if self.pending is None:
            self.pending = []

    def resume(self) -> None:
        pending, self.pending = self.pending or [], None
        for item in pending:
            self.live(*item)

    # -- outbound queue ---------------------------------------------------------
    def push(self, frame: str) -> None:
        if self.close_code is not None:
            return
        if len(self.frames) >= self.capacity:
            self.close(SLOW_CONSUMER, "slow consumer")
            return
        self.frames.append(frame)
        self.wake.set()

    async def push_paced(self, frame: str) -> None:
        """Queue a replayed frame, waiting while the queue is half full."""
        while len(self.frames) >= self.capacity // 2 and self.close_code is None:
            self.room.clear()
            await self.room.wait()
        self.push(frame)

    def take(self) -> list[str]:
        batch = list(self.frames)
        self.frames.clear()
        self.wake.clear()
        self.room.set()
        self.delivered += len(batch)
        return batch

    def close(self, code: int, reason: str = "", flush: bool = False) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason, self.flush_before_close = code, reason, flush
        self.wake.set()
        self.room.set()

    # -- per-thread delivery ----------------------------------------------------
    def live(self, thread: str, event_id: str, frame: str) -> None:
        if self.pending is not None:
            self.pending.append((thread, event_id, frame))
            if len(self.pending) > self.capacity:
                self.close(SLOW_CONSUMER, "slow consumer")
            return
        key = event_key(event_id)
        held = self.held.get(thread)
        if held is not None:
            held.append((key, frame))
            if len(held) > self.capacity:
                self.close(SLOW_CONSUMER, "slow consumer")
        elif key > self.last.get(thread, (0, 0)):
            self.last[thread] = key
            self.push(frame)

    def hold(self, thread: str) -> None:
        self.held.setdefault(thread, [])

    def release(self, thread: str, base: EventKey) -> None:
        """End a replay that delivered up to ``base``; deliver newer held frames."""
        newest = base
        for key, frame in sorted(self.held.pop(thread, []), key=lambda item: item[0]):
            if key > newest:
                newest = key
                self.push(frame)
        self.last[thread] = newest
