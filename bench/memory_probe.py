"""Where an idle socket's memory goes: the gateway in this process under tracemalloc.

    .venv/bin/python -m bench.memory_probe [--count 2000] [--deflate] [--top 12]

The gateway (``gateway.runner.build``, the same uvicorn protocol and app) runs in this
process on a free port against this run's Redis prefix (``REDIS_URL``, else the bench's
Redis), with tracemalloc on. A load worker in another process opens one warm-up socket,
then ``count`` idle sockets of distinct users, each with its ``hello``. Allocations still
alive with the sockets open, minus those before, divided by ``count``: per package (the
allocating frame's file) and per line. The RSS figure (``bench --only memory``) is the
judge; this says where to look. tracemalloc itself slows the gateway, not what it holds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tracemalloc
import uuid
from collections import defaultdict

from bench.harness import REDIS_URL, SECRET, delete_keys, free_port, loads

SETTLE = 1.0


def package_of(filename: str) -> str:
    """``starlette``, ``uvicorn``, the gateway's ``gateway`` …, or ``stdlib``."""
    parts = filename.replace("\\", "/").split("/")
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    for own in ("gateway", "adapters", "domain", "schemas"):
        if own in parts:
            return own
    return "stdlib"


async def probe(count: int, deflate: bool, top: int, frames: int) -> None:
    os.environ.update({"REDIS_URL": os.environ.get("REDIS_URL", REDIS_URL),
                       "DUOLOGUE_SECRET": SECRET,
                       "DUOLOGUE_PREFIX": f"dlprobe-{uuid.uuid4().hex[:6]}",
                       "DUOLOGUE_LOG_LEVEL": "WARNING"})
    from adapters.logs import configure
    from adapters.settings import Settings
    from gateway.runner import build

    configure("WARNING")

    port = free_port()
    server = build(Settings.from_env(), "127.0.0.1", port)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    spec = {"mode": "idle", "port": port, "count": count, "concurrency": 64,
            "deflate": deflate}
    try:
        async with loads([spec]) as (worker,):
            await worker.expect("warm", 60)
            await asyncio.sleep(SETTLE)
            gc.collect()
            tracemalloc.start(frames)
            before = tracemalloc.take_snapshot()
            await worker.say("go")
            ready = await worker.expect("ready", 240)
            await asyncio.sleep(SETTLE)
            gc.collect()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            await worker.say("go")
            await worker.result(60)
    finally:
        server.should_exit = True
        await serving
        delete_keys(f"{os.environ['DUOLOGUE_PREFIX']}*", os.environ["REDIS_URL"])
    sockets = int(ready["connections"])
    _report(after.compare_to(before, "lineno"), sockets, deflate, top)
    if frames > 1:
        _tracebacks(after.compare_to(before, "traceback"), sockets, top)


def _report(diffs: list[tracemalloc.StatisticDiff], sockets: int, deflate: bool,
            top: int) -> None:
    by_package: dict[str, int] = defaultdict(int)
    for diff in diffs:
        by_package[package_of(diff.traceback[0].filename)] += diff.size_diff
    total = sum(by_package.values())
    offered = "offered" if deflate else "not offered"
    print(f"{sockets} idle sockets, deflate {offered}: "
          f"{total / sockets / 1024:.1f} KiB allocated per socket")
    for package, size in sorted(by_package.items(), key=lambda kv: -kv[1]):
        if abs(size) / sockets >= 16:
            print(f"  {package:<14} {size / sockets / 1024:6.2f} KiB")
    print(f"the {top} largest lines (bytes per socket):")
    for diff in sorted(diffs, key=lambda d: -d.size_diff)[:top]:
        frame = diff.traceback[0]
        where = "/".join(frame.filename.split("/")[-2:])
        print(f"  {diff.size_diff / sockets:7.0f}  {where}:{frame.lineno}")


def _tracebacks(diffs: list[tracemalloc.StatisticDiff], sockets: int, top: int) -> None:
    print(f"the {top} largest call paths (bytes per socket):")
    for diff in sorted(diffs, key=lambda d: -d.size_diff)[:top]:
        print(f"  {diff.size_diff / sockets:7.0f}")
        for line in diff.traceback.format()[::2]:
            print(f"      {line.strip()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory_probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--deflate", action="store_true", help="the sockets offer permessage-deflate")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--frames", type=int, default=1,
                   help="frames kept per allocation; > 1 also prints the largest call paths")
    a = p.parse_args(argv)
    asyncio.run(probe(a.count, a.deflate, a.top, a.frames))
    return 0


if __name__ == "__main__":
    sys.exit(main())
