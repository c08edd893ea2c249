"""Fault injectors shared by the fault and race tests. The faults are real, nothing is
mocked:

- ``RedisProxy``/``proxied_gateway``: a TCP proxy in front of Redis that, on a chosen
  command, cuts a gateway's command connections (never its pub/sub one);
- ``TcpProxy``: a loopback TCP proxy that drops every connection and refuses new ones
  (Postgres away for the gateway);
- ``copy_aof``/``restore_aof``: Redis restarted from an append-only file that misses its
  last events;
- ``PrivatePostgres``/``private_postgres_server``: a Postgres server of one test's own, to
  stop and start again (the ``private_postgres`` fixture in conftest.py);
- ``numsub``/``wait_numsub``: pub/sub subscriber counts, to see what a fault left behind;
- ``say_until_acked``: resend one command until it is acked while a fault heals.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.postgres import migrate
from duologue.embedded import start_postgres
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


# -- pub/sub subscriber counts -------------------------------------------------------------


async def numsub(aredis, channel: str) -> int:
    return int((await aredis.pubsub_numsub(channel))[0][1])


async def wait_numsub(aredis, channel: str, want: int, timeout: float) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    while (got := await numsub(aredis, channel)) != want:
        if asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.05)
    return got


# -- a loopback proxy that drops every connection (Postgres away) --------------------------


class TcpProxy:
    """A loopback TCP proxy that can drop every connection and refuse new ones, or freeze
    the connections it has: they stay open and carry nothing either way (a peer gone
    without a reset, a partition), while new ones work."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.links: set[asyncio.StreamWriter] = set()
        self.frozen: set[asyncio.StreamWriter] = set()
        self.refusing = False
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> TcpProxy:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def cut(self) -> None:
        self.refusing = True
        for writer in list(self.links):
            writer.transport.abort()

    def resume(self) -> None:
        self.refusing = False

    def freeze(self) -> None:
        self.frozen.update(self.links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        with contextlib.suppress(OSError):
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
            self.links.update((writer, up_writer))

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                while data := await src.read(1 << 16):
                    if dst in self.frozen:
                        continue  # swallowed
                    dst.write(data)
                    await dst.drain()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer),
                                 return_exceptions=True)
            for w in (writer, up_writer):
                self.links.discard(w)
                w.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


# -- Redis restarted from an append-only file that misses its last events ------------------


def copy_aof(src: Path, dst: Path) -> None:
    """Copy the append-only file(s) of the Redis data directory ``src`` into ``dst``."""
    for entry in src.iterdir():
        if entry.name.startswith("appendonly"):
            if entry.is_dir():
                shutil.copytree(entry, dst / entry.name)
            else:
                shutil.copy2(entry, dst / entry.name)


def restore_aof(snapshot: Path, directory: Path) -> None:
    """Replace the append-only file(s) in ``directory`` with the copy in ``snapshot`` (Redis
    stopped): restarted, Redis misses whatever was appended after the copy."""
    for entry in directory.iterdir():
        if entry.name.startswith("appendonly"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    copy_aof(snapshot, directory)


# -- a Postgres server of the test's own, to stop and start --------------------------------


@dataclass
class PrivatePostgres:
    """A Postgres server of the test's own (pgserver), to stop and start again."""

    server: Any
    url: str

    def stop(self) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata,
               user=self.server.system_user)

    def start(self) -> None:
        with self.server._lock:
            self.server.ensure_postgres_running()


@contextlib.contextmanager
def private_postgres_server() -> Iterator[PrivatePostgres]:
    """Start a migrated Postgres server of its own; removed with its data on exit."""
    # Not under pytest's tmp_path: the server runs as another user (we are root), and
    # every pytest start chmods /tmp/pytest-of-<user> back to 0700.
    directory = Path(tempfile.mkdtemp(prefix="duologue-pg-"))
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR
            warnings.simplefilter("ignore")
            server, url = start_postgres(directory)
        try:
            migrate(url)
            yield PrivatePostgres(server, url)
        finally:
            server.cleanup()  # type: ignore[attr-defined]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
