"""Load-generator worker process: ``python -m bench.load`` (driven by ``bench.driver``).

The first stdin line is a JSON spec with ``mode`` (chat | echo | sync | idle | http_get). The
worker prints JSON lines on stdout: ``{"stage": ...}`` when it waits for the driver
(which answers ``go``), and finally ``{"result_file": path}`` or ``{"error": ...}``.
Runs on uvloop; every loop is bounded by a deadline and a count.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import traceback
from typing import Any

import uvloop

from bench import clients, httpload
from bench.common import raise_nofile


async def stage(name: str, **info: Any) -> None:
    """Report a stage and wait for the driver's ``go``."""
    print(json.dumps({"stage": name, **info}), flush=True)
    line = await asyncio.wait_for(asyncio.to_thread(sys.stdin.readline), 300)
    if line.strip() != "go":
        raise SystemExit(f"driver said {line.strip()!r}, not go")


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    modes = {"chat": clients.chat, "echo": clients.echo, "sync": clients.sync,
             "idle": clients.idle, "http_get": httpload.http_get}
    return await modes[spec["mode"]](spec, stage)


def main() -> None:
    raise_nofile(32768)
    spec = json.loads(sys.stdin.readline())
    try:
        result = uvloop.run(run(spec))
    except Exception as exc:
        traceback.print_exc()
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        sys.exit(1)
    # a large result goes through a file: a pipe write of >64 KiB may come out cut short
    fd, path = tempfile.mkstemp(prefix="dlbench-result-", suffix=".json")
    with os.fdopen(fd, "w") as out:
        json.dump(result, out)
    print(json.dumps({"result_file": path}), flush=True)


if __name__ == "__main__":
    main()
