"""Figure 3: one client catching up on N missed events with ``sync after 0``.

The thread is pre-filled through the gateway's own append path
(``gateway.store.EventStore.append``, i.e. the Lua script), then a client connects
and times ``sync`` -> ``synced``, checking it got every event once and in order.
"""

from __future__ import annotations

from typing import Any

from bench.backlog import THREAD, USER, prefill
from bench.harness import Result, Row, counted_runs, load, scratch, value
from bench.options import Options


async def sync_run(opts: Options) -> dict[str, Any]:
    async with scratch(opts, "sync", gateway=True) as world:
        fill_seconds = await prefill(world.prefix, opts.events)
        run = await load({"mode": "sync", "port": world.server.port, "user": USER,
                          "thread": THREAD, "expect": opts.events}, 120)
    return run | {"prefill_seconds": round(fill_seconds, 3), "busy_before": world.busy_before}


async def sync(opts: Options) -> Result:
    result = Result()
    runs = await counted_runs(
        opts, result, "sync", lambda: sync_run(opts),
        lambda r: (f"{r['ms']:.1f} ms for {r['events']} events (prefill "
                   f"{r['prefill_seconds']} s), ok={r['ok']}"))
    result.rows.append(Row(f"sync after 0, {opts.events:,} events", "ms",
                           [value(r, "ms", ok=r.get("ok")) for r in runs],
                           500, lower=True, digits=1))
    if any(not r.get("ok") for r in runs):
        result.notes.append("a sync run did not deliver every event exactly once in order")
    return result
