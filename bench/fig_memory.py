"""Figure 4 and permessage-deflate: the gateway's RSS growth per idle connected socket.

``memory``: 2,000 idle sockets offering ``permessage-deflate`` as browsers do, then 2,000
not offering it, each against a gateway of its own; target ≤ 20 KiB each (issue 13).

A load worker opens one warm-up socket (so first-use imports and caches are not charged
to the sockets) and VmRSS is read; then N idle sockets of N distinct users connect (64 at
a time, each subscribes its channel and gets its ``hello``), the gateway settles 1 s, and
VmRSS is read again while they are all open: (after - before) / N.

``deflate_memory``: browsers always offer ``permessage-deflate``. The same sockets offer it
as browsers do, against one gateway per server policy, all cases side by side in each
run, beside the same sockets not offering it. Two cases keep the compression context with
smaller windows than uvicorn's (window bits, ``memLevel``): an experiment, the gateway
started with ``gateway.ws_protocol``'s two constants replaced.
"""

from __future__ import annotations

import asyncio
import math
import sys
from typing import Any

from bench.harness import Result, Row, counted_runs, cpu_of, loads, rss_kib, scratch, value
from bench.options import Options

SETTLE = 1.0  # seconds before each VmRSS reading


def _bounded(window_bits: int, mem_level: int) -> list[str]:
    """``duologue gateway`` keeping the context with another window and memLevel."""
    code = ("import sys; from gateway import ws_protocol as w; "
            f"w.WINDOW_BITS, w.MEM_LEVEL = {window_bits}, {mem_level}; "
            "from duologue.cli import main; sys.exit(main(sys.argv[1:]))")
    return [sys.executable, "-c", code, "gateway"]


CASES: tuple[tuple[str, str, bool, list[str] | None], ...] = (
    # label, DUOLOGUE_WS_COMPRESSION, the client offers deflate, gateway argv (or as is)
    ("not offered", "per-message", False, None),
    ("offered, per-message (the default)", "per-message", True, None),
    ("offered, context kept, window 12 bits, memLevel 5 (uvicorn's)", "context", True, None),
    ("offered, context kept, window 10 bits, memLevel 4", "context", True, _bounded(10, 4)),
    ("offered, context kept, window 9 bits, memLevel 1 (zlib's least)", "context", True,
     _bounded(9, 1)),
    ("offered, server off", "off", True, None),
)


async def idle_run(opts: Options, count: int, settings: dict[str, str] | None = None,
                   deflate: bool = False, argv: list[str] | None = None,
                   watch: float = 0.0) -> dict[str, Any]:
    """RSS before and after ``count`` idle sockets; ``watch`` > 0: the gateway's CPU while
    they stay idle that many seconds (uvicorn pings each every 20 s)."""
    async with scratch(opts, "mem", gateway=True, settings=settings,
                       gateway_argv=argv) as world:
        pid = world.server.pid
        spec = {"mode": "idle", "port": world.server.port, "count": count, "concurrency": 64,
                "deflate": deflate}
        async with loads([spec]) as (worker,):
            await worker.expect("warm", 60)
            await asyncio.sleep(SETTLE)
            before = rss_kib(pid)
            await worker.say("go")
            ready = await worker.expect("ready", 240)
            await asyncio.sleep(SETTLE)
            after = rss_kib(pid)
            idle_cores = math.nan
            if watch > 0:
                cpu0 = cpu_of(pid)
                await asyncio.sleep(watch)
                idle_cores = (cpu_of(pid) - cpu0) / watch
            await worker.say("go")
            run = await worker.result(60)
    return run | {"rss_before_kib": before, "rss_after_kib": after, "idle_cores": idle_cores,
                  "handshakes_per_s": ready["connections"] / run["connect_seconds"],
                  "per_socket_kib": (after - before) / max(ready["connections"], 1),
                  "busy_before": world.busy_before}


async def _both(opts: Options) -> dict[str, Any]:
    """The same idle sockets offering deflate as browsers do, then not offering it."""
    offered = await idle_run(opts, opts.idle, deflate=True)
    return await idle_run(opts, opts.idle, watch=opts.idle_watch) | {"offered": offered}


async def memory(opts: Options) -> Result:
    result = Result()
    runs = await counted_runs(
        opts, result, "memory", lambda: _both(opts),
        lambda r: (f"{r['offered']['per_socket_kib']:.1f} KiB/socket deflate offered, "
                   f"{r['per_socket_kib']:.1f} not ({r['rss_before_kib']} -> "
                   f"{r['rss_after_kib']} KiB, {r['connections']} sockets in "
                   f"{r['connect_seconds']:.1f} s); idle {r['idle_cores']:.4f} cores"))
    result.rows += [
        Row(f"RSS per idle socket, {opts.idle:,} sockets, deflate offered (as browsers do)",
            "KiB", [value(r, "offered", "per_socket_kib") for r in runs], 20, lower=True,
            digits=1),
        Row(f"RSS per idle socket, {opts.idle:,} sockets, deflate not offered", "KiB",
            [value(r, "per_socket_kib") for r in runs], 20, lower=True, digits=1),
        Row(f"  gateway CPU while they idle {opts.idle_watch:.0f} s, per 1,000 sockets",
            "cores", [value(r, "idle_cores") / value(r, "connections") * 1000 for r in runs],
            lower=True, digits=4),
        Row("  handshakes with hello, 64 at a time (one load process)", "sockets/s",
            [value(r, "handshakes_per_s") for r in runs])]
    return result


async def _cases(opts: Options) -> dict[str, Any]:
    cases = {}
    for label, policy, offer, argv in CASES:
        cases[label] = await idle_run(opts, opts.deflate_idle,
                                      {"DUOLOGUE_WS_COMPRESSION": policy}, offer, argv)
    return {"cases": cases}


async def deflate_memory(opts: Options) -> Result:
    result = Result()
    runs = await counted_runs(opts, result, "deflate", lambda: _cases(opts), lambda r: "; ".join(
        f"{label}: {c['per_socket_kib']:.1f} KiB/socket ({c['negotiated']} negotiated "
        f"{c['extensions'] or 'nothing'})" for label, c in r["cases"].items()))
    for label, _, offer, _ in CASES:
        result.rows.append(Row(
            f"RSS per idle socket, {opts.deflate_idle:,} sockets, deflate {label}", "KiB",
            [value(r, "cases", label, "per_socket_kib") for r in runs],
            40.0 if "(the default)" in label else None, lower=True, digits=1,
            ceiling=not offer))
    return result
