"""Client-side frame decoding (only the fields the benchmark looks at) and connecting."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from adapters.tokens import mint
from bench import wire
from bench.common import HOST, SECRET, CpuMeter, cpu_seconds


class EventBody(msgspec.Struct):
    client_msg_id: str = ""
    sender: str = ""


class Incoming(msgspec.Struct):
    type: str
    ref: str = ""
    thread: str = ""
    id: str = ""
    last_id: str = ""
    recovered: bool = False
    event: EventBody | None = None
    code: str = ""
    message: str = ""


DECODE = msgspec.json.Decoder(Incoming).decode
BODY = "bench message: the quick brown fox jumps over it"


async def open_ws(
    port: int, user: str, on_message: Callable[[bytes], None],
    on_batch: Callable[[], None] | None = None,
) -> wire.WsClient:
    headers = {"Authorization": f"Bearer {mint(user, SECRET, 3600)}"}
    return await wire.connect(HOST, port, "/v1/ws", headers, on_message, on_batch)


async def bounded(jobs: Sequence[Callable[[], Awaitable[Any]]], limit: int,
                  timeout: float) -> list[Any]:
    """Run ``jobs`` with at most ``limit`` at a time; all must finish within ``timeout``."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return await asyncio.wait_for(asyncio.gather(*(one(j) for j in jobs)), timeout)


def server_meter(server_pid: int | None, redis_url: str | None) -> CpuMeter:
    """The load worker's meter: the gateway (``server``), Redis, this worker (``load``)."""
    processes = {"server": functools.partial(cpu_seconds, server_pid)} if server_pid else {}
    return CpuMeter(processes, redis_url)
