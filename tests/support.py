"""Test helpers: gateway subprocesses and a small WebSocket client."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets

from adapters.record import B_EVENT
from adapters.tokens import mint
from duologue.embedded import free_port
from schemas.events import MessageSent
from tests.contract_support import check_frame

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-" + "x" * 40


def uid(name: str = "u") -> str:
    return f"{name}{uuid.uuid4().hex[:10]}"


def token(user: str, ttl: int = 3600, secret: str = SECRET) -> str:
    return mint(user, secret, ttl)


class Child:
    """A ``duologue`` subprocess with its log file: read the log, stop it, kill it."""

    process: subprocess.Popen[bytes] | None
    log_path: Path | None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def terminate(self, timeout: float = 20) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@dataclass
class GatewayProcess(Child):
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    args: tuple[str, ...] = ()  # more of ``duologue gateway``'s options

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_dir: Path) -> GatewayProcess:
        self.log_path = log_dir / f"gateway-{self.port}.log"
        env = {**os.environ, "DUOLOGUE_SECRET": SECRET, **self.env}
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "duologue.cli", "gateway", "--port", str(self.port),
                 *self.args],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"{self.http_url}/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start:\n{self.log()}")
            time.sleep(0.05)



class Client:
    """One WebSocket connection; frames are read in the background into ``frames``."""

    def __init__(self, ws: websockets.ClientConnection, user: str) -> None:
        self.ws = ws
        self.user = user
        self.frames: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.reader = asyncio.create_task(self._read())
        self.seq = 0

    @classmethod
    async def connect(cls, url: str, user: str, ttl: int = 3600, **kw: Any) -> Client:
        ws = await websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {token(user, ttl)}"},
            max_size=2**24, **kw)
        client = cls(ws, user)
        hello = await client.next("hello")
        client.hello = hello
        return client

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                check_frame(frame)  # against /asyncapi.json; a mismatch fails the test
                self.frames.append(frame)
                self.arrived.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.arrived.set()

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    def cmid(self) -> str:
        self.seq += 1
        return f"{self.user}-{self.seq}"

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The first frame (from the start) matching ``predicate``, consumed."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for i, frame in enumerate(self.frames):
                if predicate(frame):
                    del self.frames[i]
                    return frame
            if self.reader.done():
                raise AssertionError(f"closed ({self.ws.close_code}) while waiting; "
                                     f"frames: {self.frames[-5:]}")
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"timed out; frames: {self.frames[-5:]}")
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)

    async def next(self, kind: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        return await self.wait_for(
            lambda f: f.get("type") == kind and all(f.get(k) == v for k, v in match.items()),
            timeout)

    async def say(self, to: str, body: str = "hi", **extra: Any) -> dict[str, Any]:
        """Send a message and return its ack (or the error)."""
        cmid = extra.pop("client_msg_id", None) or self.cmid()
        await self.send({"type": "send", "to": to, "body": body, "client_msg_id": cmid, **extra})
        return await self.wait_for(
            lambda f: f.get("type") in ("ack", "error") and f.get("ref") == cmid)

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a command frame and return its ack or error."""
        cmid = frame.setdefault("client_msg_id", self.cmid())
        await self.send(frame)
        return await self.wait_for(
            lambda f: f.get("type") in ("ack", "error") and f.get("ref") == cmid)

    def events(self, thread: str | None = None) -> list[dict[str, Any]]:
        return [f for f in self.frames
                if f.get("type") == "event" and (thread is None or f["thread"] == thread)]

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        await asyncio.wait_for(self.reader, timeout)
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.reader, return_exceptions=True)


async def handshake_refusal(ws_url: str, bearer: str) -> websockets.InvalidStatus | None:
    """How a handshake with the token ``bearer`` (in the query) was refused; None: it was
    accepted (and is closed again)."""
    try:
        ws = await websockets.connect(f"{ws_url}?token={bearer}")
    except websockets.InvalidStatus as exc:
        return exc
    await ws.close()
    return None


def thread_of(a: str, b: str) -> str:
    low, high = sorted((a, b), key=str.encode)
    return f"dm:{low}:{high}"


def id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class ProjectorProcess(Child):
    """``duologue projector`` as a subprocess, to start, kill and restart."""

    env: dict[str, str]
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, log_dir: Path) -> ProjectorProcess:
        self.log_path = log_dir / f"projector-{uuid.uuid4().hex[:8]}.log"
        env = {**os.environ, **self.env}
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "duologue.cli", "projector", *self.args],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        return self


async def blast_acked(client: Client, to: str, count: int, tag: str = "m") -> list[dict]:
    """Pipeline ``count`` sends, then return their acks in send order."""
    cmids = [f"{tag}-{client.cmid()}" for _ in range(count)]
    for cmid in cmids:
        await client.send({"type": "send", "to": to, "body": cmid, "client_msg_id": cmid})
    acks = {}
    for cmid in cmids:
        acks[cmid] = await client.wait_for(lambda f, c=cmid: f.get("ref") == c, timeout=60)
    assert all(a["type"] == "ack" for a in acks.values()), [a for a in acks.values()][:3]
    return [acks[c] for c in cmids]


def strictly_increasing(ids: list[str]) -> bool:
    return all(id_key(a) < id_key(b) for a, b in itertools.pairwise(ids))


async def blast(client: Client, to: str, count: int) -> list[dict]:
    """Pipeline ``count`` sends, then return their answers (ack or error) in send order."""
    cmids = [f"x-{client.cmid()}" for _ in range(count)]
    for cmid in cmids:
        await client.send({"type": "send", "to": to, "body": cmid, "client_msg_id": cmid})
    return [await client.wait_for(lambda f, c=cmid: f.get("ref") == c, 60) for cmid in cmids]


async def answer(client: Client, ref: str) -> dict:
    """The ack or error of the command ``ref``, consumed."""
    return await client.wait_for(
        lambda f: f.get("type") in ("ack", "error") and f.get("ref") == ref)


async def seen(client: Client, predicate, timeout: float = 10.0) -> None:
    """Wait until a frame matching ``predicate`` has arrived (without consuming it)."""
    async with asyncio.timeout(timeout):
        while not any(predicate(f) for f in client.frames):
            assert not client.reader.done(), client.ws.close_code
            await asyncio.sleep(0.01)


async def stream_events(aredis, keys, thread: str) -> list[tuple[str, dict]]:
    """The thread's stream as Redis holds it: (id, event payload) in order."""
    return [(i.decode(), json.loads(f[B_EVENT]))
            for i, f in await aredis.xrange(keys.stream(thread), "-", "+")]


def sent(user: str, cmid: str) -> MessageSent:
    return MessageSent(sender=user, body=cmid, client_msg_id=cmid)
