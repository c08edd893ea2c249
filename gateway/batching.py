"""Run concurrent calls of one Lua script as pipelines: one write and one read per batch.

redis-py spends far more time per command than Redis does; with hundreds of sockets
appending at once, sending each append on its own costs most of the gateway's CPU.
At most one batch is in flight; calls that arrive meanwhile form the next batch, so a
lone call still goes out at once and a busy gateway sends fewer, larger writes.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from redis.exceptions import NoScriptError

from adapters.redis_connect import AsyncRedis

Call = tuple[list[str], list[Any], "asyncio.Future[Any]"]
MAX_BATCH = 512


class ScriptBatcher:
    def __init__(self, redis: AsyncRedis, script: str) -> None:
        self.redis = redis
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()
        self.queue: list[Call] = []
        self.task: asyncio.Task[None] | None = None

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue.append((keys, args, future))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="duologue-append-batch")
        return await future

    async def _run(self) -> None:
        while self.queue:
            batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
            try:
                results = await self._execute(batch)
            except asyncio.CancelledError:
                _cancel(batch)
                raise
            except Exception as exc:  # the whole batch failed (e.g. Redis unreachable)
                results = [exc] * len(batch)
            for (_, _, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue  # the caller went away; the append stands, unacked
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _execute(self, batch: list[Call]) -> list[Any]:
        results = await self._send(batch)
        if any(isinstance(r, NoScriptError) for r in results):  # Redis restarted
            await self.redis.script_load(self.script)
            results = await self._send(batch)
        return results

    async def _send(self, batch: list[Call]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args, _ in batch:
                pipe.evalsha(self.sha, len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))


def _cancel(batch: list[Call]) -> None:
    for _, _, future in batch:
        if not future.done():
            future.cancel()
