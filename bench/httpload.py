"""Worker mode ``http_get``: GET requests at a steady rate over keep-alive connections.

Open loop: a pacer (1 ms ticks) starts ``rate`` requests/s spread evenly in time,
regardless of answers, each on a free keep-alive connection (a new one is opened when
none is free). Latency counts from the moment a request was due to the end of its
response body, so a slow answer delays nobody's clock. A minimal HTTP/1.1 client on
asyncio streams (uvloop) keeps the client's own cost per request small.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from typing import Any

import msgspec

from adapters.tokens import mint
from bench.harness import HOST, SECRET, CpuMeter
from bench.wire import Stage

TICK = 0.001


class Page(msgspec.Struct):
    messages: list[msgspec.Raw] = []


_page = msgspec.json.Decoder(Page).decode


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def get(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        return status, body


class Run:
    """The connections, the samples and the errors of one run."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.port, self.limit = spec["port"], spec["limit"]
        self.auth = f"Authorization: Bearer {mint(spec['user'], SECRET, 3600)}\r\n"
        self.free: deque[Conn] = deque()  # oldest first: every connection stays in use
        self.opened = 0
        self.samples: list[tuple[float, float]] = []  # (due at, seconds)
        self.errors: list[str] = []
        self.short_pages = 0
        self.stale = 0  # keep-alive connections found closed, retried on a new one

    async def connect(self) -> Conn:
        reader, writer = await asyncio.open_connection(HOST, self.port)
        self.opened += 1
        return Conn(reader, writer)

    async def one(self, due: float, path: str) -> None:
        request = (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
                   f"{self.auth}\r\n").encode()
        for attempt in range(2):
            reused = bool(self.free)
            conn = self.free.popleft() if reused else await self.connect()
            try:
                status, body = await asyncio.wait_for(conn.get(request), 10)
                break
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                conn.writer.close()
                if reused and attempt == 0 and isinstance(exc, asyncio.IncompleteReadError) \
                        and not exc.partial:
                    self.stale += 1  # the server closed an idle keep-alive connection
                    continue
                self.errors.append(f"{type(exc).__name__}: {exc}")
                return
        end = time.perf_counter()
        self.free.append(conn)
        if status != 200:
            self.errors.append(f"HTTP {status}: {body[:200]!r}")
            return
        if len(_page(body).messages) != self.limit:
            self.short_pages += 1
        self.samples.append((due, end - due))


async def pace(run: Run, paths: list[str], rate: float, start: float, until: float,
               rng: random.Random) -> int:
    """Start ``rate`` requests/s from ``start`` until ``until``; returns how many."""
    tasks: set[asyncio.Task[None]] = set()
    sent = 0
    while (now := time.perf_counter()) < until:
        due_count = int((now - start) * rate) + 1 - sent  # request n is due at n / rate
        for k in range(max(due_count, 0)):
            task = asyncio.create_task(run.one(start + (sent + k) / rate, rng.choice(paths)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent += max(due_count, 0)
        await asyncio.sleep(TICK)
    if tasks:
        await asyncio.wait(tasks, timeout=15)
    return sent


async def http_get(spec: dict[str, Any], stage: Stage) -> dict[str, Any]:
    run, rate = Run(spec), spec["rate"]
    for _ in range(spec["connections"]):
        run.free.append(await run.connect())
    meter = CpuMeter({"server": spec.get("server_pid")}, postgres=spec.get("postgres", False))
    await stage("ready", connections=len(run.free))
    start = time.perf_counter()
    measure_from = start + spec["warmup"]
    until = measure_from + spec["duration"]

    window, sent = await asyncio.gather(
        meter.window(measure_from, until),
        pace(run, spec["paths"], rate, start, until, random.Random(spec.get("seed", 1))))
    for conn in run.free:
        conn.writer.close()
    in_window = sorted(round(s * 1000, 3) for due, s in run.samples
                       if measure_from <= due < until)
    due_in_window = sum(1 for n in range(sent) if measure_from <= start + n / rate < until)
    return {"ms": in_window, "unanswered": due_in_window - len(in_window),
            "rate": len(in_window) / spec["duration"], "sent": sent, "errors": len(run.errors),
            "error_samples": run.errors[:5], "short_pages": run.short_pages,
            "connections_opened": run.opened, "stale_retried": run.stale,
            "cpu": window.cpu()}
