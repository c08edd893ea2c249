"""Client-side frame decoding (only the fields the benchmark looks at) and connecting."""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
import redis

from adapters.tokens import mint
from bench import wire
from bench.common import HOST, SECRET, cpu_seconds, machine_cpu


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


class CpuMeter:
    """CPU seconds of the server, Redis, this process and the whole machine (busy, steal)."""

    def __init__(self, server_pid: int | None, redis_url: str | None) -> None:
        self.pid = server_pid
        self.redis = redis.Redis.from_url(redis_url) if redis_url else None

    def sample(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        busy, steal = machine_cpu()
        out = {"load": usage.ru_utime + usage.ru_stime, "machine": busy, "steal": steal}
        if self.pid:
            out["server"] = cpu_seconds(self.pid)
        if self.redis is not None:
            info = self.redis.info("cpu")
            out["redis"] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        return out

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()


def utilisation(a: dict[str, float], b: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores each process used between two samples; ``other``: the rest of the machine."""
    used = {name: round((b[name] - a[name]) / seconds, 3) for name in a}
    ours = sum(v for k, v in used.items() if k not in ("machine", "steal"))
    used["other"] = round(max(0.0, used["machine"] - ours), 3)
    return used
