"""Ceilings measured beside the figures: bare Redis XADD, the append script alone,
and a bare Starlette WebSocket echo server under the gateway's uvicorn options."""

from __future__ import annotations

import asyncio
import re
import shutil
from typing import Any
from urllib.parse import urlparse

import redis

from adapters.record import Keys
from bench import procs
from bench.common import REDIS_URL, delete_prefix, new_prefix, wait_quiet
from bench.driver import go_all, workers
from bench.options import Options
from bench.report import Result, Row
from gateway.store import APPEND_LUA, append_call
from schemas.events import MessageSent

RPS = re.compile(r"([\d.]+) requests per second")


async def redis_benchmark(args: list[str], timeout: float = 120) -> float:
    exe = shutil.which("redis-benchmark")
    if exe is None:
        raise RuntimeError("redis-benchmark is not on PATH")
    process = await asyncio.create_subprocess_exec(
        exe, "-h", "127.0.0.1", "-p", str(urlparse(REDIS_URL).port or 6379), "-q", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
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


async def xadd_run(requests: int = 200_000) -> float:
    prefix = new_prefix("xadd")
    try:
        return await redis_benchmark(["-n", str(requests), "-P", "1", "-c", "50",
                                      "XADD", f"{prefix}:stream", "*", "f", "v"])
    finally:
        await asyncio.to_thread(delete_prefix, prefix)


def _append_args(prefix: str) -> list[str]:
    """EVALSHA of gateway/append.lua with the gateway's own KEYS/ARGV
    (``gateway.store.append_call``); a fresh dedupe key each call (``__rand_int__``)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        sha = str(client.script_load(APPEND_LUA))
    finally:
        client.close()
    cmid = "c__rand_int__"
    event = MessageSent(sender="alice", body="x" * 48, client_msg_id=cmid)
    keys, args = append_call(Keys(prefix, 64), 86400, "dm:alice:bob", "alice", cmid, event)
    command = ["EVALSHA", sha, str(len(keys)), *keys, *(str(a) for a in args)]
    client = redis.Redis.from_url(REDIS_URL)
    try:  # once by hand: redis-benchmark would time an error answer as gladly
        status, _ = client.execute_command(*(c.replace("__rand_int__", "0") for c in command))
    finally:
        client.close()
    if int(status) != 0:
        raise RuntimeError(f"append.lua answered {status} to the ceiling's command")
    return command


async def append_run(requests: int = 100_000) -> float:
    prefix = new_prefix("lua")
    try:
        command = await asyncio.to_thread(_append_args, prefix)
        return await redis_benchmark(["-n", str(requests), "-P", "1", "-c", "50",
                                      "-r", "1000000000000", *command])
    finally:
        await asyncio.to_thread(delete_prefix, prefix)


async def echo_run(opts: Options) -> dict[str, Any]:
    server = procs.echo_server()
    try:
        await asyncio.to_thread(server.start)
        spec = {"mode": "echo", "port": server.port, "clients": opts.echo_clients,
                "window": opts.window, "warmup": opts.warmup, "duration": opts.duration,
                "server_pid": server.pid}
        async with workers([spec]) as ws:
            await go_all(ws, "ready", 60)
            return await ws[0].result(opts.warmup + opts.duration + 60)
    finally:
        await asyncio.to_thread(server.stop)


async def ceilings(opts: Options) -> Result:
    result = Result()
    xadd, lua, echo = [], [], []
    for n in range(opts.runs):
        busy_before = await wait_quiet(opts.quiet_wait)
        xadd.append(await xadd_run())
        lua.append(await append_run())
        run = await echo_run(opts)
        echo.append(run["rate"])
        result.runs.append({"xadd": xadd[-1], "append_lua": lua[-1], "echo": run,
                            "busy_before": busy_before})
        print(f"  ceilings run {n + 1}: XADD {xadd[-1]:,.0f}/s, append.lua {lua[-1]:,.0f}/s, "
              f"echo {run['rate']:,.0f} msg/s (cpu {run['cpu']})", flush=True)
    result.rows += [
        Row("ceilings", "redis-benchmark XADD, -c 50 -P 1", "ops/s", xadd, ceiling=True),
        Row("ceilings", "redis-benchmark EVALSHA append.lua, -c 50 -P 1", "ops/s", lua,
            ceiling=True),
        Row("ceilings", f"Starlette echo, {opts.echo_clients} clients", "msgs/s", echo,
            ceiling=True),
    ]
    return result
