"""Figure 3: one client catching up on N missed events with ``sync after 0``.

The thread is pre-filled through the gateway's own append path
(``gateway.store.EventStore.append``, i.e. the Lua script), then a client connects
and times ``sync`` -> ``synced``, checking it got every event once and in order.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis

from adapters.record import Keys
from bench import procs
from bench.common import REDIS_URL, delete_prefix, new_prefix, wait_quiet
from bench.driver import go_all, workers
from bench.options import Options
from bench.report import Result, Row
from gateway.store import EventStore
from schemas.events import MessageSent

USER, OTHER = "catcher", "filler"
THREAD = f"dm:{USER}:{OTHER}"


async def prefill(prefix: str, events: int, tasks: int = 32, thread: str = THREAD,
                  users: tuple[str, str] = (USER, OTHER)) -> float:
    """Append ``events`` messages to ``thread``; returns seconds taken."""
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = Keys(prefix, 64)
    store = EventStore(client, keys, 86400)
    start = time.perf_counter()

    async def appender(offset: int) -> None:
        for n in range(offset, events, tasks):
            sender = users[n % 2]
            event = MessageSent(sender=sender, body=f"missed message number {n}",
                                client_msg_id=f"fill-{n}")
            await store.append(thread, sender, f"fill-{n}", event)

    try:
        await asyncio.wait_for(asyncio.gather(*(appender(i) for i in range(tasks))), 300)
        length = await client.xlen(keys.stream(thread))
    finally:
        await client.aclose()
    if length != events:
        raise RuntimeError(f"prefill wrote {length} events, wanted {events}")
    return time.perf_counter() - start


async def sync_run(opts: Options) -> dict[str, Any]:
    busy_before = await wait_quiet(opts.quiet_wait)
    prefix = new_prefix("sync")
    server = procs.gateway(prefix)
    try:
        await asyncio.to_thread(server.start)
        fill_seconds = await prefill(prefix, opts.events)
        spec = {"mode": "sync", "port": server.port, "user": USER, "thread": THREAD}
        async with workers([spec]) as ws:
            await go_all(ws, "ready", 60)
            result = await ws[0].result(120)
        result["prefill_seconds"] = round(fill_seconds, 3)
        result["busy_before"] = busy_before
        result["ok"] = (result["events"] == opts.events == result["distinct"]
                        and result["in_order"] and result["last_id_matches"]
                        and result["recovered"])
        return result
    finally:
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(delete_prefix, prefix)


async def sync(opts: Options) -> Result:
    result = Result()
    for n in range(opts.runs):
        run = await sync_run(opts)
        result.runs.append(run)
        print(f"  sync run {n + 1}: {run['ms']:.1f} ms for {run['events']} events "
              f"(prefill {run['prefill_seconds']} s), ok={run['ok']}", flush=True)
    values = [r["ms"] if r["ok"] else float("nan") for r in result.runs]
    result.rows.append(Row("sync", f"sync after 0, {opts.events:,} events", "ms", values, 500,
                           higher_is_better=False, digits=1))
    if any(not r["ok"] for r in result.runs):
        result.notes.append("a sync run did not deliver every event exactly once in order")
    return result
