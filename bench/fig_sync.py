"""Figure 3: one client catching up on N missed events with ``sync after 0``.

The thread is pre-filled through the gateway's own append path
(``gateway.store.EventStore.append``, i.e. the Lua script), then a client connects
and times ``sync`` -> ``synced``, checking it got every event once and in order.
"""

from __future__ import annotations

from typing import Any

from bench.backlog import THREAD, USER, prefill
from bench.driver import go_all, workers
from bench.harness import scratch
from bench.options import Options
from bench.report import Result, Row


async def sync_run(opts: Options) -> dict[str, Any]:
    async with scratch(opts, "sync", gateway=True) as world:
        fill_seconds = await prefill(world.prefix, opts.events)
        spec = {"mode": "sync", "port": world.server.port, "user": USER, "thread": THREAD}
        async with workers([spec]) as ws:
            await go_all(ws, "ready", 60)
            result = await ws[0].result(120)
        result["prefill_seconds"] = round(fill_seconds, 3)
        result["busy_before"] = world.busy_before
        result["ok"] = (result["events"] == opts.events == result["distinct"]
                        and result["in_order"] and result["last_id_matches"]
                        and result["recovered"])
        return result


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
