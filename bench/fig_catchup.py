"""The JavaScript client's reconnect and catch-up (issue 12), measured in Node.

duologue-client (``clients/js/dist``, driven by ``bench/js_catchup.mjs``) is connected to
a local gateway and caught up on ``catchup_threads`` threads. The gateway is killed;
``catchup_events`` messages are appended across those threads meanwhile (through the
gateway's own append script, Redis stays up); the gateway is started again on the same
port. The client reconnects by itself (backoff 100 ms doubling to 1 s here), syncs every
thread and folds every event; it checks that each thread holds every message once, in
order.

- the figure: from the client's new ``hello`` to its ``caughtUp`` (every thread synced,
  every event folded), target <= 1 s; beside it, from the moment ``/healthz`` answers
  again, which adds the client's reconnect wait;
- the same-run ceiling: a bare WebSocket in the same Node process (no library: JSON.parse
  and a count) replaying exactly the same events from a gateway just restarted the same
  way, hello to the last ``synced``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from typing import Any

import redis.asyncio as aioredis

from adapters.record import Keys
from adapters.tokens import mint
from bench.harness import (
    REDIS_URL,
    ROOT,
    SECRET,
    Child,
    CpuMeter,
    Result,
    Row,
    counted_runs,
    scratch,
    utilisation,
    value,
)
from bench.options import Options
from gateway.store import EventStore
from schemas.events import MessageSent

USER = "catcher"
SCRIPT = ROOT / "bench" / "js_catchup.mjs"


def _threads(n: int) -> list[tuple[str, str]]:
    """(thread, peer) of the catcher's ``n`` threads."""
    peers = [f"peer{i:04d}" for i in range(n)]
    return [(f"dm:{USER}:{peer}", peer) for peer in peers]


async def _append(prefix: str, threads: list[tuple[str, str]], per_thread: int, tag: str,
                  tasks: int = 32) -> None:
    """``per_thread`` messages from each peer, appended through the gateway's script."""
    client = aioredis.Redis.from_url(REDIS_URL)
    store = EventStore(client, Keys(prefix, 64), 86400)
    work = [(thread, peer, n) for n in range(per_thread) for thread, peer in threads]

    async def appender(offset: int) -> None:
        for thread, peer, n in work[offset::tasks]:
            cmid = f"{tag}-{n}"
            event = MessageSent(sender=peer, body=f"missed message {n} of {thread}",
                                client_msg_id=cmid)
            await store.append(thread, peer, cmid, event)

    try:
        await asyncio.gather(*(appender(i) for i in range(tasks)))
    finally:
        await client.aclose()


async def _kill(gateway: Child) -> None:
    assert gateway.process is not None
    gateway.process.kill()
    await asyncio.to_thread(gateway.process.wait)


async def _start(gateway: Child) -> None:
    """The same gateway again, on its port (``Child.start`` waits for ``/healthz``)."""
    old_log = gateway.log_path
    await asyncio.to_thread(gateway.start)
    if old_log is not None:
        old_log.unlink(missing_ok=True)


async def _restart(gateway: Child) -> None:
    await _kill(gateway)
    await _start(gateway)


class Node:
    """``node bench/js_catchup.mjs``, spoken to line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, port: int, token: str) -> Node:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("no node on PATH (Node.js 20+ is needed)")
        process = await asyncio.create_subprocess_exec(
            node, "--experimental-websocket", str(SCRIPT), str(port), token, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**24)
        return cls(process)

    async def read(self, stage: str, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"the Node client exited ({await self.process.wait()})")
        message: dict[str, Any] = json.loads(line)
        if message.get("stage") != stage:
            raise RuntimeError(f"expected {stage!r}, got {message}")
        return message

    async def say(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()

    async def stop(self) -> None:
        """It exits by itself after the ceiling; killed if it does not within 5 s."""
        try:
            await asyncio.wait_for(self.process.wait(), 5)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def catchup_run(opts: Options) -> dict[str, Any]:
    threads = _threads(opts.catchup_threads)
    per_thread = max(1, opts.catchup_events // len(threads))
    async with scratch(opts, "catchup", gateway=True) as world:
        gateway = world.server
        await _append(world.prefix, threads, 1, "seed")
        node = await Node.start(gateway.port, mint(USER, SECRET, 3600))
        try:
            ready = await node.read("ready", 60)
            await _kill(gateway)  # the gateway dies; the client starts reconnecting
            started = time.perf_counter()
            await _append(world.prefix, threads, per_thread, "missed")
            fill_seconds = time.perf_counter() - started
            await _start(gateway)
            answering, t1 = time.time() * 1000, time.perf_counter()
            meter = CpuMeter({"gateway": gateway.pid}, redis_url=REDIS_URL, me="driver")
            before = meter.sample()
            caught = await node.read("caught_up", 120)
            seconds = time.perf_counter() - t1
            after = meter.sample()
            meter.close()
            # the ceiling meets a gateway as fresh as the one the client met
            await _restart(gateway)
            await node.say({"bare": ready["cursors"]})
            bare = await node.read("bare", 120)
        finally:
            await node.stop()
    missed = per_thread * len(threads)
    ok = (caught["ok"] and caught["events"] == ready["events"] + missed
          and bare["events"] == missed and caught["threads"] == len(threads))
    return {"ms": caught["ms"], "after_healthy_ms": round(caught["caught_up_at"] - answering, 1),
            "reconnect_wait_ms": round(caught["hello_at"] - answering, 1),
            "bare_ms": bare["ms"], "missed": missed, "threads": len(threads), "ok": ok,
            "fill_seconds": round(fill_seconds, 2), "client": caught, "bare": bare,
            # cores used from /healthz to caught up; `other`: other sessions (a noisy run
            # is redone)
            "cpu": utilisation(before, after, seconds, extra=caught["cpu_ms"] / 1000 / seconds),
            "busy_before": world.busy_before}


async def client_catchup(opts: Options) -> Result:
    result = Result()
    runs = await counted_runs(
        opts, result, "client_catchup", lambda: catchup_run(opts),
        lambda r: (f"{r['ms']} ms hello -> caught up on {r['missed']:,} events in "
                   f"{r['threads']} threads ({r['after_healthy_ms']} ms after /healthz; "
                   f"bare socket {r['bare_ms']} ms), ok={r['ok']}"))
    label = f"{opts.catchup_events:,} missed events, {opts.catchup_threads} threads"
    result.rows.append(Row(f"JS client caught up after hello, {label}", "ms",
                           [value(r, "ms", ok=r.get("ok")) for r in runs], 1000, lower=True))
    result.rows.append(Row(f"JS client caught up after /healthz (reconnect wait incl.), {label}",
                           "ms", [value(r, "after_healthy_ms", ok=r.get("ok")) for r in runs]))
    result.rows.append(Row(f"bare Node WebSocket replay of the same events, {label}", "ms",
                           [value(r, "bare_ms", ok=r.get("ok")) for r in runs], ceiling=True,
                           lower=True))
    if any(not r.get("ok") for r in runs):
        result.notes.append("a client_catchup run did not end with every event once, in order")
    return result
