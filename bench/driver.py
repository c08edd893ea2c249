"""The driver's side of a load worker (``bench.load``): spec in, stages and result out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.common import ROOT

_running: set[asyncio.subprocess.Process] = set()


class LoadProcessError(RuntimeError):
    """The worker reported an error or went away."""


class LoadProcess:
    """One load-generating process (`python -m bench.load`), driven line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, spec: dict[str, Any]) -> LoadProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.load", cwd=ROOT, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, limit=2**26)
        _running.add(process)
        worker = cls(process)
        await worker.say(json.dumps(spec))
        return worker

    async def say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def expect(self, stage: str, timeout: float) -> dict[str, Any]:
        message = await self._next(timeout)
        if message.get("stage") != stage:
            raise LoadProcessError(f"expected stage {stage!r}, got {message}")
        return message

    async def result(self, timeout: float) -> dict[str, Any]:
        message = await self._next(timeout)
        if "result_file" not in message:
            raise LoadProcessError(f"expected a result, got {message}")
        path = Path(message["result_file"])
        try:
            result: dict[str, Any] = json.loads(path.read_text())
        finally:
            path.unlink(missing_ok=True)
        await asyncio.wait_for(self.process.wait(), 10)
        _running.discard(self.process)
        return result

    async def _next(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise LoadProcessError(f"worker exited (code {await self.process.wait()})")
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            raise LoadProcessError(message["error"])
        return message

    def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        _running.discard(self.process)


@contextlib.asynccontextmanager
async def workers(specs: list[dict[str, Any]]) -> AsyncIterator[list[LoadProcess]]:
    """Start one worker per spec; kill any still running on the way out."""
    started: list[LoadProcess] = []
    try:
        for spec in specs:
            started.append(await LoadProcess.start(spec))
        yield started
    finally:
        for worker in started:
            worker.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker.process.wait(), 5)


async def go_all(ws: list[LoadProcess], stage: str, timeout: float) -> list[dict[str, Any]]:
    """Wait until every worker reached ``stage``, then release them together."""
    reached = await asyncio.gather(*(w.expect(stage, timeout) for w in ws))
    for w in ws:
        await w.say("go")
    return list(reached)


def kill_all() -> None:
    for process in list(_running):
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        _running.discard(process)
