"""Figure 4: gateway RSS growth per idle connected socket.

The baseline is read after one warm-up socket has connected (so first-use imports
and caches are not charged to the sockets); then N idle sockets (N distinct users)
connect, the gateway settles, and VmRSS is read again while they are all open.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench import procs
from bench.common import delete_prefix, new_prefix, rss_kib, wait_quiet
from bench.driver import workers
from bench.options import Options
from bench.report import Result, Row

SETTLE = 1.0  # seconds before each VmRSS reading


async def memory_run(opts: Options) -> dict[str, Any]:
    busy_before = await wait_quiet(opts.quiet_wait)
    prefix = new_prefix("mem")
    server = procs.gateway(prefix)
    try:
        await asyncio.to_thread(server.start)
        spec = {"mode": "idle", "port": server.port, "count": opts.idle, "concurrency": 64}
        async with workers([spec]) as ws:
            worker = ws[0]
            await worker.expect("warm", 60)
            await asyncio.sleep(SETTLE)
            before = rss_kib(server.pid)
            await worker.say("go")
            ready = await worker.expect("ready", 240)
            await asyncio.sleep(SETTLE)
            after = rss_kib(server.pid)
            await worker.say("go")
            result = await worker.result(60)
        connected = int(ready["connections"])
        result.update(rss_before_kib=before, rss_after_kib=after, busy_before=busy_before,
                      per_socket_kib=(after - before) / max(connected, 1))
        return result
    finally:
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(delete_prefix, prefix)


async def memory(opts: Options) -> Result:
    result = Result()
    for n in range(opts.runs):
        run = await memory_run(opts)
        result.runs.append(run)
        print(f"  memory run {n + 1}: {run['per_socket_kib']:.1f} KiB/socket "
              f"({run['rss_before_kib']} -> {run['rss_after_kib']} KiB, "
              f"{run['connections']} sockets in {run['connect_seconds']:.1f} s)", flush=True)
    result.rows.append(Row("memory", f"RSS per idle socket, {opts.idle:,} sockets", "KiB",
                           [r["per_socket_kib"] for r in result.runs], 64,
                           higher_is_better=False, digits=1))
    return result
