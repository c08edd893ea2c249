"""Run concurrent calls of one Lua script as pipelines: one write and one read per batch.

redis-py spends far more time per command than Redis does; with hundreds of sockets
appending at once, sending each append on its own costs most of the gateway's CPU.
At most one batch is in flight; calls that arrive meanwhile form the next batch, so a
lone call still goes out at once and a busy gateway sends fewer, larger writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from adapters.redis_connect import AsyncRedis
from gateway.errors import NotReplicatedError
from gateway.pipeline import Command, pipelined, pipelined_on_node

# a node's answer that the command belongs elsewhere, or not yet (MovedError is an AskError,
# MasterDownError a ClusterDownError): sent again through the cluster client
ELSEWHERE = (AskError, TryAgainError, ClusterDownError)

Call = tuple[list[str], list[Any], "asyncio.Future[Any]"]
MAX_BATCH = 512


class ScriptBatcher:
    def __init__(self, redis: AsyncRedis, script: str, replicas: int = 0,
                 wait_ms: int = 1000, drop_abandoned: bool = False,
                 idempotent: bool = True) -> None:
        self.redis = redis
        self.script = script
        # a call whose caller went away before its batch was sent is not sent (the send
        # budget: a take nobody will append after, or give back, would be lost)
        self.drop_abandoned = drop_abandoned
        # a call that may have run can be sent again (an append: a rerun is the duplicate
        # it is; not the send budget's take or refund, which would count twice)
        self.idempotent = idempotent
        self.refreshing: asyncio.Task[None] | None = None  # a cluster's slot map, read again
        # DUOLOGUE_ACK_REPLICAS (protocol.md section 9): each batch ends with WAIT on the
        # connection (each node's, on a cluster) that ran its scripts
        self.replicas = replicas
        self.wait_ms = wait_ms
        self.node_clients: dict[str, Redis] = {}  # a cluster's nodes, for the WAIT path
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
            if self.drop_abandoned:
                batch = [call for call in batch if not call[2].done()]
                if not batch:
                    continue
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
        missing = [n for n, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:  # Redis restarted, or (a cluster) a promoted replica lacks the script
            await self.redis.script_load(self.script)
            again = await self._send([batch[n] for n in missing])  # only those: the
            for n, result in zip(missing, again, strict=True):  # others ran already
                results[n] = result
        return results

    def _command(self, call: Call) -> Command:
        keys, args, _ = call
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    async def _send(self, batch: list[Call]) -> list[Any]:
        if isinstance(self.redis, RedisCluster):
            if self.replicas:
                return await self._send_per_node(self.redis, batch)
            return await self._send_to_nodes(self.redis, batch)
        commands = [self._command(call) for call in batch]
        if self.replicas:
            commands.append(("WAIT", self.replicas, self.wait_ms))
        results = await pipelined(self.redis, commands,
                                  self.wait_ms / 1000 if self.replicas else 0.0)
        if not self.replicas:
            return results
        return [_replicated(result, results[-1], self.replicas) for result in results[:-1]]

    async def _send_to_nodes(self, cluster: RedisCluster, batch: list[Call]) -> list[Any]:
        """Each node's calls in one round trip on that node's connection, in parallel. A
        call the node says belongs elsewhere (or whose node is not known) is sent again,
        in order, through the cluster client's pipeline, which follows redirections and
        reads the slot map again. A call its node did not answer (the connection was lost
        or timed out; it may have run) is sent again that way only when the script is
        ``idempotent`` (an append that ran answers as the duplicate it is); otherwise, and
        after a timeout, it fails (``unavailable``). A lost or silent node has the slot
        map read again, in the background."""
        results: list[Any] = [None] * len(batch)
        groups, again = _by_node(cluster, batch)
        lost = False  # a node's connection was lost or timed out

        async def on(node: ClusterNode, calls: list[int]) -> None:
            nonlocal lost
            replies = await pipelined_on_node(node, [self._command(batch[n]) for n in calls])
            for n, reply in zip(calls, replies, strict=True):
                lost = lost or isinstance(reply, ConnectionError | RedisTimeoutError)
                if isinstance(reply, ELSEWHERE) or (
                        self.idempotent and isinstance(reply, ConnectionError)):
                    again.append(n)
                else:
                    results[n] = reply

        await asyncio.gather(*(on(node, calls) for node, calls in groups.values()))
        if lost:  # a failover may have moved its slots (a redirection mends the map itself)
            self._refresh_slots(cluster)
        if again:
            again.sort()
            try:
                async with cluster.pipeline(transaction=False) as pipe:
                    for n in again:
                        pipe.execute_command(*self._command(batch[n]))
                    replies: list[Any] = list(await pipe.execute(raise_on_error=False))
            except (RedisError, RedisClusterException, OSError) as exc:  # these calls only
                replies = [exc] * len(again)
            for n, reply in zip(again, replies, strict=True):
                results[n] = reply
        return results

    def _refresh_slots(self, cluster: RedisCluster) -> None:
        """Read the slot map again, once at a time, without holding the batch up."""
        if self.refreshing is None or self.refreshing.done():
            self.refreshing = asyncio.create_task(_initialize(cluster),
                                                  name="duologue-slot-map")

    async def _send_per_node(self, cluster: RedisCluster, batch: list[Call]) -> list[Any]:
        """``WAIT`` counts what one connection wrote, so on a cluster each node's calls go
        in a pipeline of their own on one connection to that node, ``WAIT`` last, and are
        never redirected: a call that met ``MOVED``, ``ASK`` or ``TRYAGAIN`` there is
        ``unavailable`` (the slot map is read again), never acked by another node's count."""
        results: list[Any] = [None] * len(batch)
        groups, unknown = _by_node(cluster, batch)
        for n in unknown:
            results[n] = ClusterDownError("no node holds this slot now")

        async def on(node: ClusterNode, calls: list[int]) -> None:
            client = self._node_client(node)
            try:
                async with client.pipeline(transaction=False) as pipe:
                    for n in calls:
                        keys, args, _ = batch[n]
                        pipe.evalsha(self.sha, len(keys), *keys, *args)
                    pipe.execute_command("WAIT", self.replicas, self.wait_ms)
                    replies = list(await pipe.execute(raise_on_error=False))
            except (RedisError, OSError) as exc:
                replies = [exc] * (len(calls) + 1)
            for n, reply in zip(calls, replies, strict=False):
                results[n] = _replicated(reply, replies[-1], self.replicas)

        await asyncio.gather(*(on(node, calls) for node, calls in groups.values()))
        if any(isinstance(r, (*ELSEWHERE, ConnectionError)) for r in results):
            await _initialize(cluster)  # where the slots are now
        return results

    def _node_client(self, node: Any) -> Redis:
        """A plain client of one cluster node (its connections are this batcher's own)."""
        client = self.node_clients.get(node.name)
        if client is None:
            client = self.node_clients[node.name] = Redis(
                host=node.host, port=int(node.port), socket_timeout=5,
                socket_connect_timeout=2)
        return client


def _by_node(cluster: RedisCluster, batch: list[Call]
             ) -> tuple[dict[str, tuple[ClusterNode, list[int]]], list[int]]:
    """The batch's calls by the node the slot map names for their first key, and the
    calls it names none for (the map is not read yet, or lacks the slot)."""
    groups: dict[str, tuple[ClusterNode, list[int]]] = {}
    unknown: list[int] = []
    for n, (keys, _, _) in enumerate(batch):
        try:
            node = cluster.get_node_from_key(keys[0]) if keys else None
        except RedisClusterException:
            node = None
        if node is None:
            unknown.append(n)
        else:
            groups.setdefault(node.name, (node, []))[1].append(n)
    return groups, unknown


async def _initialize(cluster: RedisCluster) -> None:
    with contextlib.suppress(RedisError, RedisClusterException, OSError):
        await cluster.nodes_manager.initialize()


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
