"""Figure 4: gateway RSS growth per idle connected socket.

The baseline is read after one warm-up socket has connected (so first-use imports
and caches are not charged to the sockets); then N idle sockets (N distinct users)
connect, the gateway settles, and VmRSS is read again while they are all open.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.common import rss_kib
from bench.driver import workers
from bench.harness import scratch
from bench.options import Options
from bench.report import Result, Row

SETTLE = 1.0  # seconds before each VmRSS reading


async def memory_run(opts: Options) -> dict[str, Any]:
    async with scratch(opts, "mem", gateway=True) as world:
        server = world.server
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
        result.update(rss_before_kib=before, rss_after_kib=after,
                      busy_before=world.busy_before,
                      per_socket_kib=(after - before) / max(connected, 1))
        return result


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


# -- permessage-deflate: what a browser's offer costs an idle socket ------------------
# Browsers always offer permessage-deflate. The `websockets` client offers it as they do
# (`permessage-deflate; client_max_window_bits`); each case starts its own gateway with
# DUOLOGUE_WS_COMPRESSION set, so the cases are measured side by side in one run.
DEFLATE_CASES = (  # (label, server policy, client offers deflate)
    ("not offered", "per-message", False),
    ("offered, per-message (default)", "per-message", True),
    ("offered, context kept", "context", True),
    ("offered, server off", "off", True),
)


async def _deflate_case(opts: Options, policy: str, offer: bool) -> dict[str, Any]:
    import websockets

    from adapters.tokens import mint
    from bench.common import SECRET

    sockets: list[Any] = []

    async def one(user: str) -> None:
        ws = await websockets.connect(
            f"ws://127.0.0.1:{world.server.port}/v1/ws", compression="deflate" if offer else None,
            additional_headers={"Authorization": f"Bearer {mint(user, SECRET, 3600)}"},
            max_queue=4, ping_interval=None)
        await asyncio.wait_for(ws.recv(), 20)  # hello
        sockets.append(ws)

    async with scratch(opts, "deflate", gateway=True,
                       settings={"DUOLOGUE_WS_COMPRESSION": policy}) as world:
        await one("warm0")
        await asyncio.sleep(SETTLE)
        before = rss_kib(world.server.pid)
        gate = asyncio.Semaphore(64)

        async def bounded(n: int) -> None:
            async with gate:
                await one(f"idle{n:05d}")

        await asyncio.gather(*(bounded(n) for n in range(opts.deflate_idle)))
        await asyncio.sleep(SETTLE)
        after = rss_kib(world.server.pid)
        negotiated = sum(1 for ws in sockets if ws.protocol.extensions)
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        return {"policy": policy, "offer": offer, "sockets": len(sockets) - 1,
                "negotiated": negotiated, "rss_before_kib": before, "rss_after_kib": after,
                "per_socket_kib": (after - before) / max(len(sockets) - 1, 1),
                "busy_before": world.busy_before}


async def deflate_memory(opts: Options) -> Result:
    result = Result()
    per_case: dict[str, list[float]] = {label: [] for label, _, _ in DEFLATE_CASES}
    for n in range(opts.runs):
        for label, policy, offer in DEFLATE_CASES:
            run = await _deflate_case(opts, policy, offer)
            run["case"] = label
            result.runs.append(run)
            per_case[label].append(run["per_socket_kib"])
            print(f"  deflate run {n + 1}, {label}: {run['per_socket_kib']:.1f} KiB/socket "
                  f"({run['negotiated']} negotiated deflate)", flush=True)
    for label, _, offer in DEFLATE_CASES:
        target = 40.0 if label.endswith("(default)") else None
        result.rows.append(Row("deflate_memory", f"RSS per idle socket, deflate {label}", "KiB",
                               per_case[label], target, higher_is_better=False, digits=1,
                               ceiling=not offer))
    return result
