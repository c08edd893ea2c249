"""py-spy sampling of a server process during a load window, summarised as text.

``py-spy record --format raw`` writes collapsed stacks (``f1;f2;f3 count``); the
summary gives the share of samples per activity and per leaf function (self time),
per function anywhere on the stack (inclusive time) and per package of the leaf frame.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.harness import RESULTS

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
# py-spy names files relative to sys.path: "redis/asyncio/client.py", "gateway/hub.py"
PACKAGES = ("gateway/", "domain/", "schemas/", "duologue/", "bench/", "redis/", "uvicorn/",
            "websockets/", "starlette/", "structlog/", "msgspec/", "asyncio/", "uvloop/",
            "logging/", "re/", "jwt/")
ROOTS = ("<frozen runpy>", "(duologue/cli.py)", "(gateway/runner.py)", "(uvicorn/server.py)",
         "(uvicorn/_compat.py)", "(asyncio/runners.py)")


def _has(*packages: str) -> Callable[[str], bool]:
    return lambda frame: any(f"({p}" in frame for p in packages)


def _send_side(frame: str) -> bool:
    return (_has("uvicorn/", "starlette/", "gateway/session.py")(frame)
            and "send" in frame.split(" (")[0].lower())


# (activity, test on the leaf frame), first match wins
CATEGORIES: list[tuple[str, Callable[[str], bool]]] = [
    ("event loop itself (uvloop, C code; shows as Runner.run)",
     lambda f: f.startswith("Runner.run (")),
    ("logging (structlog, logging, redaction regex)",
     _has("structlog/", "logging/", "re/", "duologue/logs.py")),
    ("Redis pub/sub receive (redis-py PubSub, gateway/hub.py)",
     lambda f: "PubSub." in f or "pubsub" in f or _has("gateway/hub.py")(f)),
    ("Redis commands (redis-py client, pool, encoder, parser)", _has("redis/")),
    ("WebSocket send (uvicorn/starlette send, session._send)", _send_side),
    ("WebSocket receive (uvicorn, websockets frames, starlette)",
     _has("uvicorn/", "websockets/", "starlette/")),
    ("asyncio machinery (tasks, wait_for, timeouts, locks, streams)", _has("asyncio/")),
    ("gateway logic (gateway, domain, schemas, duologue)",
     _has("gateway/", "domain/", "schemas/", "msgspec/", "bench/", "duologue/")),
]


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: float, delay: float, rate: int = 200) -> Path | None:
    """Sample ``pid`` for ``seconds`` after ``delay``; the raw output file, or None."""
    exe = py_spy()
    if exe is None:
        return None
    await asyncio.sleep(delay)
    out = Path(tempfile.mkstemp(prefix="dlbench-pyspy-", suffix=".txt")[1])
    process = await asyncio.create_subprocess_exec(
        exe, "record", "--format", "raw", "--nonblocking", "--rate", str(rate),
        "--duration", str(max(1, round(seconds))), "--pid", str(pid), "-o", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await asyncio.wait_for(process.wait(), seconds + 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return out if out.stat().st_size else None


def keep(path: Path) -> Path:
    """Move the raw stacks to bench/results/ (git-ignored), e.g. for flamegraph.pl."""
    target = RESULTS / time.strftime("profile-%Y%m%d-%H%M%S.txt")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(path, target)
    return target


def _name(frame: str) -> str:
    match = FRAME.match(frame)
    return frame if match is None else f"{match['func']} ({match['file']})"


def _package(frame: str) -> str:
    match = FRAME.match(frame)
    file = match["file"] if match else ""
    return next((p.rstrip("/") for p in PACKAGES if file.startswith(p)), "other")


def _category(frame: str) -> str:
    return next((name for name, test in CATEGORIES if test(frame)), "other")


def summary(path: Path, top: int = 15) -> str:
    """Shares of the samples: by activity, leaf function, function on the stack, package."""
    own: Counter[str] = Counter()
    on_stack: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count, frames = int(count_text), stack.split(";")
        total += count
        own[_name(frames[-1])] += count
        packages[_package(frames[-1])] += count
        categories[_category(frames[-1])] += count
        for name in {_name(f) for f in frames}:
            if not any(root in name for root in ROOTS):
                on_stack[name] += count

    def block(title: str, counter: Counter[str], n: int | None = None) -> list[str]:
        return ["", title, *(f"  {100 * k / max(total, 1):5.1f}%  {name}"
                             for name, k in counter.most_common(n))]

    return "\n".join([
        f"{total} samples (non-idle)",
        *block("self time by activity (leaf frame):", categories),
        *block("self time (leaf frame):", own, top),
        *block("inclusive (on the stack; coroutine stacks are often cut short, so a "
               "lower bound):", on_stack, top),
        *block("self time by package of the leaf frame:", packages)])
