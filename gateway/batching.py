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

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from adapters.redis_connect import AsyncRedis
from gateway.errors import NotReplicatedError

Call = tuple[list[str], list[Any], "asyncio.Future[Any]"]
MAX_BATCH = 512


class ScriptBatcher:
    def __init__(self, redis: AsyncRedis, script: str, replicas: int = 0,
                 wait_ms: int = 1000) -> None:
        self.redis = redis
        self.script = script
        # DUOLOGUE_ACK_REPLICAS (protocol.md section 9): each batch ends with WAIT on the
        # connection (each node's, on a cluster) that ran its scripts
        self.replicas = replicas
        self.wait_ms = wait_ms
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
        nodes = self._nodes(batch)
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args, _ in batch:
                pipe.evalsha(self.sha, len(keys), *keys, *args)
            if self.replicas:
                for node in dict.fromkeys(nodes):
                    if node is None:
                        pipe.execute_command("WAIT", self.replicas, self.wait_ms)
                    else:
                        pipe.execute_command("WAIT", self.replicas, self.wait_ms,
                                             target_nodes=node)
            results = list(await pipe.execute(raise_on_error=False))
        if not self.replicas:
            return results
        held = dict(zip(dict.fromkeys(nodes), results[len(batch):], strict=True))
        return [_replicated(result, held[node], self.replicas)
                for result, node in zip(results[:len(batch)], nodes, strict=True)]

    def _nodes(self, batch: list[Call]) -> list[Any]:
        """The node each call runs on (None for all: one Redis)."""
        if not self.replicas or not isinstance(self.redis, RedisCluster):
            return [None] * len(batch)
        return [self.redis.get_node_from_key(keys[0]) for keys, _, _ in batch]


def _replicated(result: Any, held: Any, wanted: int) -> Any:
    """The script's answer, or ``NotReplicatedError`` when fewer than ``wanted`` replicas
    confirmed the writes before it in time (the event stands: a resend is a duplicate)."""
    if isinstance(result, Exception):
        return result
    if isinstance(held, Exception):
        return held
    if int(held) < wanted:
        return NotReplicatedError(int(held), wanted)
    return result


def _cancel(batch: list[Call]) -> None:
    for _, _, future in batch:
        if not future.done():
            future.cancel()
