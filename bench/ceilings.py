"""Ceilings measured beside the figures: bare Redis XADD, the append script alone,
and a bare Starlette WebSocket echo server under the gateway's uvicorn options."""

from __future__ import annotations

import asyncio
import re
import shutil
from typing import Any
from urllib.parse import urlparse

import redis

from adapters.record import OK, Keys
from bench.harness import (
    REDIS_URL,
    Result,
    Row,
    Scratch,
    counted_runs,
    echo_server,
    load,
    scratch,
    value,
)
from bench.options import Options
from gateway.store import APPEND_LUA, append_call
from schemas.events import MessageSent

RPS = re.compile(r"([\d.]+) requests per second")


async def redis_benchmark(*args: str, timeout: float = 120, url: str = REDIS_URL) -> float:
    exe = shutil.which("redis-benchmark")
    if exe is None:
        raise RuntimeError("redis-benchmark is not on PATH")
    process = await asyncio.create_subprocess_exec(
        exe, "-h", "127.0.0.1", "-p", str(urlparse(url).port or 6379), "-q", "-P", "1",
        "-c", "50", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    found = RPS.findall(out.decode(errors="replace"))
    if not found:
        raise RuntimeError(f"redis-benchmark said: {out[-500:]!r}")
    return float(found[-1])


def append_command(keys: Keys, url: str = REDIS_URL) -> list[str]:
    """EVALSHA of gateway/append.lua with the gateway's own KEYS/ARGV
    (``gateway.store.append_call``); a fresh dedupe key each call (``__rand_int__``),
    checked once by hand: redis-benchmark would time an error answer as gladly."""
    cmid = "c__rand_int__"
    event = MessageSent(sender="alice", body="x" * 48, client_msg_id=cmid)
    k, args = append_call(keys, 86400, "dm:alice:bob", "alice", cmid, event)
    client = redis.Redis.from_url(url)
    try:
        command = ["EVALSHA", str(client.script_load(APPEND_LUA)), str(len(k)), *k,
                   *(str(a) for a in args)]
        status, _ = client.execute_command(  # type: ignore[no-untyped-call]
            *(c.replace("__rand_int__", "0") for c in command))
    finally:
        client.close()
    if int(status) != OK:
        raise RuntimeError(f"append.lua answered {status} to the ceiling's command")
    return command


async def append_lua_ceiling(world: Scratch, url: str = REDIS_URL) -> float:
    """``redis-benchmark`` running ``append.lua`` (ops/s) on the Redis at ``url``, under
    the run's prefix."""
    command = await asyncio.to_thread(append_command, world.keys, url)
    return await redis_benchmark("-n", "100000", "-r", "1000000000000", *command, url=url)


async def echo_ceiling(opts: Options) -> dict[str, Any]:
    """The bare Starlette echo under the gateway's uvicorn options: its load result."""
    server = echo_server()
    try:
        await asyncio.to_thread(server.start)
        return await load({"mode": "echo", "port": server.port, "clients": opts.echo_clients,
                           "window": opts.window, "warmup": opts.warmup,
                           "duration": opts.duration, "server_pid": server.pid},
                          opts.warmup + opts.duration + 60)
    finally:
        await asyncio.to_thread(server.stop)


async def ceilings_run(opts: Options) -> dict[str, Any]:
    async with scratch(opts, "ceil") as world:
        xadd = await redis_benchmark("-n", "200000", "XADD", f"{world.prefix}:x", "*", "f", "v")
        lua = await append_lua_ceiling(world)
    echo = await echo_ceiling(opts)
    return {"xadd": xadd, "append_lua": lua, "echo": echo, "busy_before": world.busy_before}


async def ceilings(opts: Options) -> Result:
    result = Result()
    runs = await counted_runs(
        opts, result, "ceilings", lambda: ceilings_run(opts),
        lambda r: (f"XADD {r['xadd']:,.0f}/s, append.lua {r['append_lua']:,.0f}/s, echo "
                   f"{r['echo']['rate']:,.0f} msg/s (cpu {r['echo']['cpu']})"))
    result.rows += [
        Row("redis-benchmark XADD, -c 50 -P 1", "ops/s", [value(r, "xadd") for r in runs],
            ceiling=True),
        Row("redis-benchmark EVALSHA append.lua, -c 50 -P 1", "ops/s",
            [value(r, "append_lua") for r in runs], ceiling=True),
        Row(f"Starlette echo, {opts.echo_clients} clients", "msgs/s",
            [value(r, "echo", "rate") for r in runs], ceiling=True),
    ]
    return result
