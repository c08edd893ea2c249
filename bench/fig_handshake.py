"""``handshakes``: what a WebSocket handshake costs the gateway (protocol.md sections 2
and 8): a mass reconnect after a deploy, or one user reconnecting as fast as it can.

``handshake_clients`` clients each open ``/v1/ws``, wait for the ``hello``, close, and
start again, for ``duration`` seconds, spread over ``handshake_users`` users (each a
user's only socket: its presence goes online and offline every time). Three series per
run, each with the gateway's (or the echo server's) CPU per handshake:

- accepted: every limit off;
- refused: the read budget spent (``DUOLOGUE_READ_RATE`` 0.001), so each is a 429;
- the same-run ceiling: the bare Starlette echo server under the gateway's uvicorn options
  (``bench.echo_server``), one text frame echoed in place of the hello.

The load runs in this process; its CPU per handshake is shown too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from bench import wire
from bench.harness import Child, Result, Row, counted_runs, cpu_of, echo_server, scratch, value
from bench.options import Options

ACCEPTED = {"DUOLOGUE_READ_RATE": "0", "DUOLOGUE_MAX_SOCKETS": "0"}
REFUSED = {"DUOLOGUE_READ_RATE": "0.001", "DUOLOGUE_READ_BURST": "1",
           "DUOLOGUE_MAX_SOCKETS": "0"}


async def _cycles(opts: Options, port: int, pid: int, echo: bool) -> dict[str, Any]:
    """Open, first frame, close, again: per second and CPU per cycle over ``duration``."""
    done = 0
    refused = 0
    end = 0.0

    async def client(n: int) -> None:
        nonlocal done, refused
        user = f"h{n % opts.handshake_users:05d}"
        while time.perf_counter() < end:
            first: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

            def on_message(payload: bytes, first: asyncio.Future[bytes] = first) -> None:
                if not first.done():
                    first.set_result(payload)
            try:
                ws = await wire.open_ws(port, user, on_message)
            except wire.HandshakeError as exc:  # refused: counted, as the accepted ones
                if " 429 " not in f"{exc} ":  # the status line
                    raise
                refused += 1
                done += 1
                continue
            if echo:
                ws.send(b"hello")
            await asyncio.wait_for(first, 10)
            ws.close()
            done += 1

    end = time.perf_counter() + opts.warmup
    await asyncio.gather(*(client(n) for n in range(opts.handshake_clients)))
    done = refused = 0
    server0, me0, t0 = cpu_of(pid), time.process_time(), time.perf_counter()
    end = t0 + opts.duration
    await asyncio.gather(*(client(n) for n in range(opts.handshake_clients)))
    seconds = time.perf_counter() - t0
    server, me = cpu_of(pid) - server0, time.process_time() - me0
    return {"rate": done / seconds, "handshakes": done, "refused": refused,
            "server_us": server / done * 1e6, "load_us": me / done * 1e6,
            "server_cores": server / seconds, "load_cores": me / seconds}


async def handshake_run(opts: Options) -> dict[str, Any]:
    run: dict[str, Any] = {}
    for name, settings in (("accepted", ACCEPTED), ("refused", REFUSED)):
        async with scratch(opts, "hs", gateway=True, settings=settings) as world:
            cycles = await _cycles(opts, world.server.port, world.server.pid, echo=False)
            run.setdefault("busy_before", world.busy_before)
        wanted = 0 if name == "accepted" else cycles["handshakes"]
        if cycles["refused"] != wanted:  # else the series measured something else
            raise RuntimeError(f"{name} series: {cycles['refused']} of "
                               f"{cycles['handshakes']} handshakes refused, wanted {wanted}")
        run[name] = cycles
    server: Child = echo_server()
    try:
        await asyncio.to_thread(server.start)
        run["echo"] = await _cycles(opts, server.port, server.pid, echo=True)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(server.stop)
    return run


def _say(run: dict[str, Any]) -> str:
    return ", ".join(
        f"{name} {run[name]['rate']:,.0f}/s at {run[name]['server_us']:,.0f} us "
        f"(load {run[name]['load_us']:,.0f} us)" for name in ("accepted", "refused", "echo"))


async def handshakes(opts: Options) -> Result:
    result = Result()
    runs = await counted_runs(opts, result, "handshakes", lambda: handshake_run(opts), _say)
    clients = f"{opts.handshake_clients} clients"
    result.rows += [
        Row(f"handshakes accepted (open, hello, close), {clients}", "handshakes/s",
            [value(r, "accepted", "rate") for r in runs]),
        Row("  gateway CPU per accepted handshake", "us",
            [value(r, "accepted", "server_us") for r in runs], lower=True),
        Row("  gateway CPU per handshake refused with 429 (read budget spent)", "us",
            [value(r, "refused", "server_us") for r in runs], lower=True),
        Row("  gateway CPU per accepted handshake / echo server's per handshake", "x",
            [value(r, "accepted", "server_us") / value(r, "echo", "server_us")
             for r in runs], lower=True, digits=2),
        Row("  load generator CPU per accepted handshake", "us",
            [value(r, "accepted", "load_us") for r in runs], lower=True),
        Row(f"bare Starlette echo: handshakes (open, one echo, close), {clients}",
            "handshakes/s", [value(r, "echo", "rate") for r in runs], ceiling=True),
        Row("  echo server CPU per handshake", "us",
            [value(r, "echo", "server_us") for r in runs], lower=True, ceiling=True),
    ]
    return result
