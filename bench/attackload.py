"""The hostile user of the ``hostile`` figure (protocol.md section 8): one account on
``sockets`` WebSockets flooding typing (to a normal user's thread), ``sync`` of its own
threads and oversized frames, ``rate`` frames/s in all, for ``seconds`` (only the
``kinds`` given: the others' slots in the schedule stay empty; ``reconnect``, not in
the default mix, closes the socket in the oversized frames' slots instead); a socket the
gateway closes (an oversized frame: 1009) is opened again. Frames are written without
waiting for answers. Stages: ``ready`` (sockets open), then ``left`` (all closed)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

from bench import wire
from bench.wire import Stage, WsClient

OVERSIZED = 70_000  # characters: over the gateway's 64 KiB frame limit


def _kind(i: int, kinds: set[str]) -> str | None:
    """The ``i``-th slot's frame: every 50th oversized (or a reconnect), the others typing
    and sync in turn; None when that kind is not measured (the slot stays empty)."""
    kind = "oversized" if i % 50 == 49 else "typing" if i % 2 else "sync"
    if kind == "oversized" and "reconnect" in kinds:
        kind = "reconnect"  # the socket closed by the client in the same slots
    return kind if kind in kinds else None


async def attack(spec: dict[str, Any], stage: Stage) -> dict[str, Any]:
    user, victim, port = spec["user"], spec["victim"], spec["port"]
    low, high = sorted((user, victim), key=str.encode)
    kinds = set(spec.get("kinds", ("typing", "sync", "oversized")))
    typing = json.dumps({"type": "typing", "thread": f"dm:{low}:{high}"}).encode()
    frames = {
        "typing": lambda: typing,
        "sync": lambda: json.dumps({"type": "sync", "thread": f"dm:{user}:{user}",
                                    "after": "0"}).encode(),
        "oversized": lambda: json.dumps({"type": "send", "to": victim,
                                         "body": "x" * OVERSIZED}).encode(),
    }
    answers = {"error": 0, "other": 0}

    def on_message(payload: bytes) -> None:
        kind = wire.DECODE(payload).type
        answers["error" if kind == "error" else "other"] += 1

    async def opened() -> WsClient:
        return await wire.open_ws(port, user, on_message)

    sockets = [await opened() for _ in range(spec["sockets"])]
    await stage("ready")
    sent = {"typing": 0, "sync": 0, "oversized": 0, "reconnect": 0}
    reopened = 0
    started = time.perf_counter()
    interval = spec["sockets"] / spec["rate"]  # per socket, between two frames
    counter = itertools.count()

    async def flood(n: int) -> None:
        nonlocal reopened
        ws = sockets[n]
        next_at = time.perf_counter()
        while time.perf_counter() - started < spec["seconds"]:
            if not ws.open:
                ws.close()
                try:
                    ws = sockets[n] = await opened()
                    reopened += 1
                except Exception:  # refused (429) or not yet: try again a little later
                    await asyncio.sleep(0.05)
                    continue
            kind = _kind(next(counter), kinds)
            if kind == "reconnect":
                ws.close()
            elif kind is not None:
                ws.send(frames[kind]())
            if kind is not None:
                sent[kind] += 1
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)

    await asyncio.gather(*(flood(n) for n in range(len(sockets))))
    seconds = time.perf_counter() - started
    for ws in sockets:
        ws.close()
    await stage("left")
    return {"sent": sent, "frames": sum(sent.values()), "seconds": seconds,
            "rate": sum(sent.values()) / seconds, "reopened": reopened, "answers": answers}
