"""Worker modes other than the chat load: echo ceiling, sync catch-up, idle sockets."""

from __future__ import annotations

import asyncio
import itertools
import time
from functools import partial
from typing import Any

from bench import frames
from bench.chatload import Stage, chat
from bench.common import utilisation
from bench.frames import server_meter
from bench.verify import id_key
from bench.wire import WsClient

__all__ = ["chat", "echo", "idle", "sync"]


class Echoer:
    """One echo connection keeping ``window`` messages in flight."""

    def __init__(self, counter: list[int], payload: bytes, running: list[bool]) -> None:
        self.counter, self.payload, self.running = counter, payload, running
        self.refill = 0
        self.ws: WsClient | None = None

    def on_message(self, payload: bytes) -> None:
        self.counter[0] += 1
        self.refill += 1

    def on_batch(self) -> None:
        count, self.refill = self.refill, 0
        if count and self.running[0] and self.ws is not None:
            self.ws.send_many([self.payload] * count)

    async def connect(self, port: int, user: str) -> None:
        self.ws = await frames.open_ws(port, user, self.on_message, self.on_batch)


async def echo(spec: dict[str, Any], stage: Stage) -> dict[str, Any]:
    counter, running = [0], [True]
    payload = (f'{{"type":"send","to":"someone","body":"{frames.BODY}",'
               f'"client_msg_id":"e-000000"}}').encode()
    echoers = [Echoer(counter, payload, running) for _ in range(spec["clients"])]
    await frames.bounded([partial(e.connect, spec["port"], f"e{i}")
                          for i, e in enumerate(echoers)], 50, 60)
    meter = server_meter(spec.get("server_pid"), None)
    await stage("ready", connections=len(echoers))
    for e in echoers:
        assert e.ws is not None
        e.ws.send_many([payload] * spec["window"])
    await asyncio.sleep(spec["warmup"])
    c1, t1, cpu1 = counter[0], time.perf_counter(), meter.sample()
    await asyncio.sleep(spec["duration"])
    c2, t2, cpu2 = counter[0], time.perf_counter(), meter.sample()
    running[0] = False
    await asyncio.sleep(0.3)
    for e in echoers:
        if e.ws is not None:
            e.ws.close()
    await asyncio.sleep(0.2)
    return {"rate": (c2 - c1) / (t2 - t1), "echoed_in_window": c2 - c1, "seconds": t2 - t1,
            "cpu": utilisation(cpu1, cpu2, t2 - t1)}


async def sync(spec: dict[str, Any], stage: Stage) -> dict[str, Any]:
    """Time ``sync after 0`` from the request to ``synced``; check the replay."""
    loop = asyncio.get_running_loop()
    hello: asyncio.Future[None] = loop.create_future()
    synced: asyncio.Future[tuple[float, str, bool]] = loop.create_future()
    ids: list[str] = []

    def on_message(payload: bytes) -> None:
        frame = frames.DECODE(payload)
        if frame.type == "event":
            ids.append(frame.id)
        elif frame.type == "synced" and not synced.done():
            synced.set_result((time.perf_counter(), frame.last_id, frame.recovered))
        elif frame.type == "hello" and not hello.done():
            hello.set_result(None)

    ws = await frames.open_ws(spec["port"], spec["user"], on_message)
    await asyncio.wait_for(hello, 10)
    await stage("ready")
    request = f'{{"type":"sync","thread":"{spec["thread"]}","after":"0"}}'.encode()
    start = time.perf_counter()
    ws.send(request)
    end, last_id, recovered = await asyncio.wait_for(synced, 60)
    keys = [id_key(i) for i in ids]
    in_order = all(a < b for a, b in itertools.pairwise(keys))
    ws.close()
    await asyncio.sleep(0.1)
    return {"ms": (end - start) * 1000, "events": len(ids), "in_order": in_order,
            "distinct": len(set(ids)), "last_id_matches": bool(ids) and last_id == ids[-1],
            "recovered": recovered}


async def idle(spec: dict[str, Any], stage: Stage) -> dict[str, Any]:
    """One warm-up socket, then ``count`` idle sockets held open until the driver says go."""
    opened: list[WsClient] = []

    async def one(user: str) -> None:
        loop = asyncio.get_running_loop()
        hello: asyncio.Future[None] = loop.create_future()

        def on_message(payload: bytes) -> None:
            if not hello.done() and frames.DECODE(payload).type == "hello":
                hello.set_result(None)

        opened.append(await frames.open_ws(spec["port"], user, on_message))
        await asyncio.wait_for(hello, 20)

    await one("warm0")
    await stage("warm")
    start = time.perf_counter()
    await frames.bounded([partial(one, f"idle{i:05d}") for i in range(spec["count"])],
                         spec["concurrency"], 180)
    connect_seconds = time.perf_counter() - start
    await stage("ready", connections=len(opened) - 1)
    for ws in opened:
        ws.close()
    await asyncio.sleep(0.5)
    return {"connections": len(opened) - 1, "connect_seconds": connect_seconds,
            "still_open": sum(1 for ws in opened if not ws.closed.done())}
