"""One WebSocket connection: its outbound queue, its close, its token expiry and
refusal count, and its ``Delivery`` state machine (``gateway/delivery.py``).

- ``frames``: the bounded outbound queue; a frame that finds it full closes the socket
  with 1013 (slow consumer). Our uvicorn protocol's writer (``gateway.ws_protocol``)
  sends it: the first push of a loop iteration schedules a callback that writes the
  whole queue with one write, and a close is sent the same way, so a socket needs no
  task of its own to send.
- ``delivery``: which frames go out, once each and in order per thread, across live
  fan-out, ``sync`` and catch-ups after a pub/sub gap.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING

from domain.ids import EventKey
from gateway.delivery import Delivery, SlowConsumerError
from gateway.lean import Flag

if TYPE_CHECKING:
    from gateway.ws_protocol import FrameWriter

SLOW_CONSUMER = 1013
POLICY = 1008
TOO_MANY_REFUSED = "too many refused frames"  # the reason of that 1008 close
GONE = 1006  # logged only: the peer vanished without a close frame
REFUSAL_LIMIT = 20  # more refusals than this within REFUSAL_WINDOW seconds close the socket
REFUSAL_WINDOW = 60.0
LOG_EVERY = 1.0  # seconds: a connection's refusals past the first in this span are counted


class Connection:
    def __init__(self, user: str, capacity: int) -> None:
        self.user = user
        self.capacity = capacity
        self.frames: list[str] = []
        self.room = Flag()
        self.delivery = Delivery(capacity)
        self.replaying = asyncio.Lock()  # one replay (sync or catch-up) at a time
        self.catching_up: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.flush_before_close = False
        self.inflight = 0
        self.draining = False
        self.delivered = 0
        self.received = 0
        self.expiry: asyncio.TimerHandle | None = None
        self.refusals: deque[float] | None = None
        self.logged_at = -LOG_EVERY  # when a refusal of this connection was last logged
        self.unlogged = 0  # refusals since then, not logged one by one
        self.writer: FrameWriter | None = None  # attach(): flushed by callbacks
        self.flush_at: asyncio.Handle | None = None  # the flush scheduled, if any

    @property
    def last(self) -> dict[str, EventKey]:
        """Per thread, the newest event id delivered."""
        return self.delivery.last

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

    def log_refusal(self) -> int | None:
        """None when this refusal goes unlogged (the connection logged one less than
        LOG_EVERY ago); otherwise how many went unlogged before it. A flood of refused
        frames is thus one log line a second per connection, not one per frame."""
        now = time.monotonic()
        if now - self.logged_at < LOG_EVERY:
            self.unlogged += 1
            return None
        self.logged_at, unlogged, self.unlogged = now, self.unlogged, 0
        return unlogged

    def cleanup(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
        if self.catching_up is not None:
            self.catching_up.cancel()

    # -- delivery: the state machine's answers go to the queue ----------------------
    def start(self, threads: list[tuple[str, str]]) -> bool:
        """``hello`` was queued: its last ids are the floor; release early live frames.

        True when a resubscription happened meanwhile: the connection stays paused
        and the caller must start a catch-up."""
        frames, catch_up = self.delivery.hello(threads)
        self.push_all(frames)
        return catch_up

    def live(self, thread: str, event_id: str, frame: str) -> None:
        try:
            self.push_all(self.delivery.live(thread, event_id, frame))
        except SlowConsumerError:
            self.close(SLOW_CONSUMER, "slow consumer")

    def push_all(self, frames: list[str]) -> None:
        for frame in frames:
            self.push(frame)

    # -- outbound queue ---------------------------------------------------------
    def push(self, frame: str) -> None:
        if self.close_code is not None:
            return
        if len(self.frames) >= self.capacity:
            self.close(SLOW_CONSUMER, "slow consumer")
            return
        self.frames.append(frame)
        self._wake()

    def _wake(self) -> None:
        """A flush, once per loop iteration, from the moment a writer is attached."""
        if self.writer is not None and self.flush_at is None:
            self.flush_at = asyncio.get_running_loop().call_soon(self._flush)

    def attach(self, writer: FrameWriter) -> None:
        """From now on ``writer`` sends the queue (what is queued already, at once)."""
        self.writer = writer
        writer.on_resume = self._wake
        self._wake()

    def detach(self) -> None:
        if self.flush_at is not None:
            self.flush_at.cancel()
            self.flush_at = None
        if self.writer is not None:
            self.writer.on_resume = None
            self.writer = None

    def _flush(self) -> None:
        """Everything queued, in one write; then the close, if one was asked for."""
        self.flush_at = None
        writer = self.writer
        if writer is None:
            return
        try:
            closing = self.close_code is not None
            if self.frames and (not closing or self.flush_before_close):
                # Closing, the last frames go out even while the transport is paused
                # (no more can be queued), or a client that stopped reading would keep
                # its socket: the close behind them would never be sent.
                if not writer.write_now(self.frames, force=closing):
                    return  # paused: ``on_resume`` flushes again
                self.delivered += len(self.frames)
                self.frames = []
                self.room.set()
            if self.close_code is not None:
                writer.close_now(self.close_code, self.close_reason)
        except (RuntimeError, OSError):  # the socket is gone (ClientDisconnected), or closing
            self.detach()
            self.close(GONE, "client gone")  # wakes a replay waiting for room

    def push_droppable(self, frame: str) -> None:
        """Queue an ephemeral frame (typing) only while the queue is under half full: a
        receiver is never closed for them (protocol.md section 8)."""
        if len(self.frames) < self.capacity // 2:
            self.push(frame)

    async def push_paced(self, frame: str) -> None:
        """Queue a replayed frame, waiting while the queue is half full."""
        while len(self.frames) >= self.capacity // 2 and self.close_code is None:
            self.room.clear()
            await self.room.wait()
        self.push(frame)

    def close(self, code: int, reason: str = "", flush: bool = False) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason, self.flush_before_close = code, reason, flush
        self._wake()
        self.room.set()

    def closed_by_client(self, code: int) -> None:
        """The client closed the socket (or vanished) with ``code``."""
        if self.close_code is None:  # nothing to wake: the receiver ends the connection
            self.close_code, self.close_reason = code, "client"
