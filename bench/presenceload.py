"""The presence churn load: ``users`` watched users, each watched by one watcher socket
(a thread between them made beforehand by the driver), and sockets of the watched users
opened and closed round robin at ``rate`` socket changes/s for ``duration`` s.

Each change is timed on the client (a socket open: its ``hello``; a close: the close
sent) and matched with the watcher's next presence frame with that ``online`` value; a
frame answers every change of that user before it (a change coalesced by the server is
answered by the next frame). A change never answered counts as infinite latency.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

from bench import wire
from bench.wire import Stage, WsClient

DRAIN = 5.0  # seconds to wait for the last frames after the churn stops


class Churned:
    """One watched user: its socket (or none) and its changes awaiting a frame."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.ws: WsClient | None = None
        self.pending: list[tuple[bool, float]] = []  # (online, at)

    async def open(self, port: int) -> None:
        hello: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_message(payload: bytes) -> None:
            if not hello.done() and wire.DECODE(payload).type == "hello":
                hello.set_result(None)

        self.ws = await wire.open_ws(port, self.user, on_message)
        await asyncio.wait_for(hello, 10)
        self.pending.append((True, time.perf_counter()))

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None
            self.pending.append((False, time.perf_counter()))


class Watcher:
    def __init__(self, user: str, target: Churned, samples: list[float]) -> None:
        self.user, self.target, self.samples = user, target, samples
        self.first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ws: WsClient | None = None
        self.frames = 0

    def on_message(self, payload: bytes) -> None:
        frame = wire.DECODE(payload)
        if frame.type != "presence":
            return
        self.frames += 1
        if not self.first.done():
            self.first.set_result(None)
            return
        now, pending = time.perf_counter(), self.target.pending
        last = max((i for i, (online, _) in enumerate(pending) if online == frame.online),
                   default=None)
        if last is not None:
            self.samples.extend(now - at for _, at in pending[:last + 1])
            del pending[:last + 1]

    async def open(self, port: int) -> None:
        self.ws = await wire.open_ws(port, self.user, self.on_message)
        self.ws.send(f'{{"type":"watch","users":["{self.target.user}"]}}'.encode())
        await asyncio.wait_for(self.first, 10)


async def _round(churned: list[Churned], port: int, rate: float, duration: float) -> int:
    """``rate`` socket changes/s for ``duration`` s, then every churned socket closed."""
    start = time.perf_counter()
    changes, turn = 0, 0
    inflight: set[asyncio.Task[None]] = set()
    while time.perf_counter() - start < duration:
        due = int((time.perf_counter() - start) * rate) - changes
        for _ in range(max(0, due)):
            target = churned[turn]
            turn = (turn + 1) % len(churned)
            if target.ws is None:
                task = asyncio.create_task(target.open(port))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            else:
                target.close()
            changes += 1
        await asyncio.sleep(0.002)
    await asyncio.gather(*inflight, return_exceptions=True)
    for target in churned:
        target.close()
    return changes


async def churn(spec: dict[str, Any], stage: Stage) -> dict[str, Any]:
    port, rate = spec["port"], spec["rate"]
    samples: list[float] = []
    churned = [Churned(f"c{i:05d}") for i in range(spec["users"])]
    watchers = [Watcher(f"w{i:05d}", c, samples) for i, c in enumerate(churned)]
    await wire.bounded([partial(w.open, port) for w in watchers], 50, 120)
    await stage("ready", watchers=len(watchers))
    changes = 0
    for _ in range(2):  # a warm-up round, then the measured one; the driver reads RSS after each
        changes += await _round(churned, port, rate, spec["duration"])
        deadline = time.perf_counter() + DRAIN
        while any(c.pending for c in churned) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        await stage("churned")
    unanswered = sum(len(c.pending) for c in churned)
    for w in watchers:
        if w.ws is not None:
            w.ws.close()
    await asyncio.sleep(0.2)
    return {"changes": changes, "rate": changes / spec["duration"] / 2,
            "latency_ms": sorted(round(s * 1000, 3) for s in samples), "unanswered": unanswered,
            "frames": sum(w.frames for w in watchers)}
