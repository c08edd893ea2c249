"""Load-generator worker process: ``python -m bench.load`` (driven by ``bench.harness``).

The first stdin line is a JSON spec with ``mode`` (chat | echo | sync | idle | http_get |
presence_churn). The worker prints JSON lines on stdout: ``{"stage": ...}`` when it waits
for the driver (which answers ``go``), and finally ``{"result_file": path}`` or
``{"error": ...}``. Runs on uvloop; every loop is bounded by a deadline and a count. The
modes other than chat (``bench.chatload``), http_get (``bench.httpload``) and
presence_churn (``bench.presenceload``) are here: the echo ceiling, the sync catch-up and
the idle sockets.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
import traceback
from functools import partial
from typing import Any

import uvloop

from bench import attackload, chatload, httpload, presenceload, wire
from bench.harness import CpuMeter, raise_nofile
from bench.wire import Stage, WsClient
from domain.ids import event_key


async def echo(spec: dict[str, Any], stage: Stage) -> dict[str, Any]:
    """``clients`` connections keep ``window`` messages each in flight to an echo server."""
    counter, running = [0], [True]
    payload = (f'{{"type":"send","to":"someone","body":"{wire.BODY}",'
               f'"client_msg_id":"e-000000"}}').encode()

    class Echoer:
        def __init__(self) -> None:
            self.refill = 0
            self.ws: WsClient | None = None

        def on_message(self, _: bytes) -> None:
            counter[0] += 1
            self.refill += 1

        def on_batch(self) -> None:
            count, self.refill = self.refill, 0
            if count and running[0] and self.ws is not None:
                self.ws.send_many([payload] * count)

        async def connect(self, user: str) -> None:
            self.ws = await wire.open_ws(spec["port"], user, self.on_message, self.on_batch)

    echoers = [Echoer() for _ in range(spec["clients"])]
    await wire.bounded([partial(e.connect, f"e{i}") for i, e in enumerate(echoers)], 50, 60)
    meter = CpuMeter({"server": spec.get("server_pid")})
    await stage("ready", connections=len(echoers))
    for e in echoers:
        assert e.ws is not None
        e.ws.send_many([payload] * spec["window"])
    start = time.perf_counter() + spec["warmup"]
    window = await meter.window(start, start + spec["duration"], lambda: counter[0])
    running[0] = False
    await asyncio.sleep(0.3)
    for e in echoers:
        if e.ws is not None:
            e.ws.close()
    await asyncio.sleep(0.2)
    return {"rate": window.counted / window.seconds, "echoed_in_window": window.counted,
            "seconds": window.seconds, "cpu": window.cpu()}


async def sync(spec: dict[str, Any], stage: Stage) -> dict[str, Any]:
    """Time ``sync after 0`` from the request to ``synced``; check the replay: ``expect``
    events, each once, in order, ``synced.last_id`` the last, ``recovered``."""
    loop = asyncio.get_running_loop()
    hello: asyncio.Future[None] = loop.create_future()
    synced: asyncio.Future[tuple[float, str, bool]] = loop.create_future()
    ids: list[str] = []

    def on_message(payload: bytes) -> None:
        frame = wire.DECODE(payload)
        if frame.type == "event":
            ids.append(frame.id)
        elif frame.type == "synced" and not synced.done():
            synced.set_result((time.perf_counter(), frame.last_id, frame.recovered))
        elif frame.type == "hello" and not hello.done():
            hello.set_result(None)

    ws = await wire.open_ws(spec["port"], spec["user"], on_message)
    await asyncio.wait_for(hello, 10)
    await stage("ready")
    start = time.perf_counter()
    ws.send(f'{{"type":"sync","thread":"{spec["thread"]}","after":"0"}}'.encode())
    end, last_id, recovered = await asyncio.wait_for(synced, 60)
    in_order = all(event_key(a) < event_key(b) for a, b in itertools.pairwise(ids))
    ws.close()
    await asyncio.sleep(0.1)
    ok = (len(ids) == len(set(ids)) == spec["expect"] and in_order and recovered
          and bool(ids) and last_id == ids[-1])
    return {"ms": (end - start) * 1000, "events": len(ids), "distinct": len(set(ids)),
            "in_order": in_order, "recovered": recovered, "ok": ok}


async def idle(spec: dict[str, Any], stage: Stage) -> dict[str, Any]:
    """One warm-up socket, then ``count`` idle sockets (``deflate``: offering it), each
    with its ``hello``, held open until the driver says go."""
    opened: list[WsClient] = []

    async def one(user: str) -> None:
        hello: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_message(payload: bytes) -> None:
            if not hello.done() and wire.DECODE(payload).type == "hello":
                hello.set_result(None)

        opened.append(await wire.open_ws(spec["port"], user, on_message,
                                         deflate=spec.get("deflate", False)))
        await asyncio.wait_for(hello, 20)

    await one("warm0")
    await stage("warm")
    start = time.perf_counter()
    await wire.bounded([partial(one, f"idle{i:05d}") for i in range(spec["count"])],
                       spec["concurrency"], 180)
    connect_seconds = time.perf_counter() - start
    negotiated = sum(1 for ws in opened[1:] if ws.extensions)
    await stage("ready", connections=len(opened) - 1, negotiated=negotiated)
    for ws in opened:
        ws.close()
    await asyncio.sleep(0.5)
    return {"connections": len(opened) - 1, "connect_seconds": connect_seconds,
            "negotiated": negotiated, "extensions": opened[-1].extensions}


MODES = {"chat": chatload.chat, "echo": echo, "sync": sync, "idle": idle,
         "http_get": httpload.http_get, "presence_churn": presenceload.churn,
         "attack": attackload.attack}


async def stage(name: str, **info: Any) -> None:
    """Report a stage and wait for the driver's ``go``."""
    print(json.dumps({"stage": name, **info}), flush=True)
    line = await asyncio.wait_for(asyncio.to_thread(sys.stdin.readline), 300)
    if line.strip() != "go":
        raise SystemExit(f"driver said {line.strip()!r}, not go")


def main() -> None:
    raise_nofile(32768)
    spec = json.loads(sys.stdin.readline())
    try:
        result = uvloop.run(MODES[spec["mode"]](spec, stage))
    except Exception as exc:
        traceback.print_exc()
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        sys.exit(1)
    # a large result goes through a file: a pipe write of >64 KiB may come out cut short
    fd, path = tempfile.mkstemp(prefix="dlbench-result-", suffix=".json")
    with os.fdopen(fd, "w") as out:
        json.dump(result, out)
    print(json.dumps({"result_file": path}), flush=True)


if __name__ == "__main__":
    main()
