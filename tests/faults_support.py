"""Fault injectors and waiting helpers shared by the fault and race tests: a Redis proxy
that cuts the gateway's command connections, pub/sub subscriber counts, stream reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from adapters.record import B_EVENT
from schemas.events import MessageSent
from tests.support import Client

# -- a Redis proxy that cuts the gateway's command connections, never its pub/sub one ------


class RedisProxy:
    """TCP proxy in front of Redis. ``trip(pred)``: when a command matching ``pred`` comes
    through a command connection, drop every command connection (not that command) and
    refuse new ones until ``heal()``. The pub/sub connection (it sent SUBSCRIBE) is kept,
    so the gateway sees no pub/sub gap and runs no catch-up."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, list[bool]]] = []
        self.refusing = False
        self.predicate = None
        self.tripped = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.handlers: set[asyncio.Task] = set()

    @classmethod
    async def open(cls, redis_url: str) -> RedisProxy:
        host, _, port = redis_url.removeprefix("redis://").partition("/")[0].partition(":")
        proxy = cls(host, int(port or 6379))
        proxy.server = await asyncio.start_server(proxy._accept, "127.0.0.1", 0)
        proxy.port = proxy.server.sockets[0].getsockname()[1]
        return proxy

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def trip(self, predicate) -> None:
        self.tripped.clear()
        self.predicate = predicate

    def heal(self) -> None:
        self.predicate = None
        self.refusing = False

    def _cut(self) -> None:
        self.refusing = True
        self.predicate = None
        for client, upstream, pubsub in self.links:
            if not pubsub[0]:
                client.transport.abort()
                upstream.transport.abort()
        self.tripped.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            await self._relay(reader, writer)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self.handlers.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        pubsub = [False]
        link = (writer, up_writer, pubsub)
        self.links.append(link)

        async def to_redis() -> None:
            while data := await reader.read(1 << 16):
                if b"SUBSCRIBE" in data:
                    pubsub[0] = True
                if not pubsub[0] and self.predicate is not None and self.predicate(data):
                    self._cut()
                    return
                up_writer.write(data)
                await up_writer.drain()

        async def to_client() -> None:
            while data := await up_reader.read(1 << 16):
                writer.write(data)
                await writer.drain()

        await asyncio.gather(to_redis(), to_client(), return_exceptions=True)
        self.links.remove(link)
        writer.transport.abort()
        up_writer.transport.abort()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for client, upstream, _ in list(self.links):
            client.transport.abort()
            upstream.transport.abort()
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)


@contextlib.asynccontextmanager
async def proxied_gateway(start_gateway, redis_url: str, **env: str):
    """A gateway whose Redis traffic goes through a ``RedisProxy``; both stopped on exit
    (the gateway first, from a thread, so that its drain can still talk through the proxy)."""
    proxy = await RedisProxy.open(redis_url)
    gateway = None
    try:
        # started from a thread: the proxy runs on this event loop, and the gateway's
        # startup talks to Redis through it while start() waits for /healthz
        gateway = await asyncio.to_thread(start_gateway, REDIS_URL=proxy.url, **env)
        yield gateway, proxy
    finally:
        proxy.heal()
        if gateway is not None:
            await asyncio.to_thread(gateway.terminate)
        await proxy.close()


async def say_until_acked(client: Client, to: str, body: str) -> dict:
    """Send until acked with the same client_msg_id (the first tries may meet dead
    pooled connections)."""
    cmid = client.cmid()
    for _ in range(50):
        answer = await client.say(to, body, client_msg_id=cmid)
        if answer["type"] == "ack":
            return answer
        await asyncio.sleep(0.1)
    raise AssertionError(answer)


# -- a client that vanishes during a paced replay ------------------------------------------


async def numsub(aredis, channel: str) -> int:
    return int((await aredis.pubsub_numsub(channel))[0][1])


async def wait_numsub(aredis, channel: str, want: int, timeout: float) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    while (got := await numsub(aredis, channel)) != want:
        if asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.05)
    return got


# -- races that hold today (no test covered them) ------------------------------------------


async def stream_events(aredis, keys, thread: str) -> list[tuple[str, dict]]:
    return [(i.decode(), json.loads(f[B_EVENT]))
            for i, f in await aredis.xrange(keys.stream(thread), "-", "+")]


async def answer(client: Client, ref: str) -> dict:
    return await client.wait_for(
        lambda f: f.get("type") in ("ack", "error") and f.get("ref") == ref)


def key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)

async def seen(client: Client, predicate, timeout: float = 10.0) -> None:
    """Wait until a frame matching ``predicate`` has arrived (without consuming it)."""
    async with asyncio.timeout(timeout):
        while not any(predicate(f) for f in client.frames):
            assert not client.reader.done(), client.ws.close_code
            await asyncio.sleep(0.01)


async def blast(client: Client, to: str, count: int) -> list[dict]:
    cmids = [f"x-{client.cmid()}" for _ in range(count)]
    for cmid in cmids:
        await client.send({"type": "send", "to": to, "body": cmid, "client_msg_id": cmid})
    return [await client.wait_for(lambda f, c=cmid: f.get("ref") == c, 60) for cmid in cmids]


def sent(user: str, cmid: str) -> MessageSent:
    return MessageSent(sender=user, body=cmid, client_msg_id=cmid)
