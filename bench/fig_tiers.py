"""Figures of the two tiers (protocol.md section 7), each beside its same-run reference.

- ``idle_memory``: Redis memory per idle archived thread with one message, over 10,000
  threads (INFO used_memory of a private redis-server), after retention removed them;
  beside the same threads before retention and the bare cost of their two index entries.
- ``archive_sync``: ``sync after 0`` of a 10,000-event thread of which 9,000 are only in
  the archive, beside the same replay of a thread wholly in the stream, in the same run.
- ``retention``: projector events/s with retention trimming (DUOLOGUE_RETAIN_EVENTS=50,
  a pass every 2 s) beside the same backlog projected with retention off.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
from pathlib import Path
from typing import Any

import redis

from adapters.record import Keys
from bench.backlog import append_all, prefill, project_backlog
from bench.harness import (
    REDIS_URL,
    Result,
    Row,
    counted_runs,
    delete_keys,
    load,
    run_duologue,
    scratch,
    used_memory,
    value,
)
from bench.options import Options
from duologue.embedded import EmbeddedRedis
from gateway.store import append_call
from schemas.events import MessageSent

PEERS = 5  # each user starts threads with the next five: ~10 threads per user


def _burst(redis_url: str, database_url: str, prefix: str, **env: str) -> None:
    """``duologue projector --burst`` until it has drained and made its retention pass."""
    run_duologue(["projector", "--burst"], {"REDIS_URL": redis_url, "DATABASE_URL": database_url,
                                            "DUOLOGUE_PREFIX": prefix, **env})


def _threads(count: int) -> list[tuple[str, str]]:
    """(sender, peer) of ``count`` distinct threads, ~10 per user."""
    users = count // PEERS + 1
    pairs = [(f"u{i:06d}", f"u{(i + k) % users:06d}") for i in range(users)
             for k in range(1, PEERS + 1)]
    return pairs[:count]


def _fill(client: redis.Redis, keys: Keys, pairs: list[tuple[str, str]]) -> None:
    """One message in each thread, through append.lua."""
    calls = []
    for n, (sender, peer) in enumerate(pairs):
        low, high = sorted((sender, peer))
        event = MessageSent(sender=sender, body=f"the only message #{n}", client_msg_id=f"m{n}")
        calls.append(append_call(keys, 86400, f"dm:{low}:{high}", sender, f"m{n}", event))
    for start in range(0, len(calls), 1000):
        append_all(client, calls[start:start + 1000])


async def idle_memory_run(opts: Options) -> dict[str, Any]:
    prefix = "dl"  # a private server: the key names of a real deployment
    keys = Keys(prefix, 64)
    async with scratch(opts, "idle", database=True) as world:
        with tempfile.TemporaryDirectory(prefix="dlbench-redis-") as directory:
            server = EmbeddedRedis(Path(directory), persist=False).start()
            client = redis.Redis.from_url(server.url)
            try:
                pairs = _threads(opts.idle_threads)
                base = used_memory(client)
                _fill(client, keys, pairs)
                filled = used_memory(client)
                dedupe = sum(client.memory_usage(k, samples=0) or 0
                             for k in client.scan_iter(match=keys.dedupe_pattern(), count=1000))
                await asyncio.to_thread(_burst, server.url, world.database_url, prefix,
                                        DUOLOGUE_RETAIN_IDLE="0")
                delete_keys(keys.dedupe_pattern(), server.url)  # 24 h idempotency: not counted
                after = used_memory(client)
                left = sum(1 for _ in client.scan_iter(match=keys.thread_pattern(), count=1000))
                floor_base = used_memory(client)
                floor_keys = Keys("floor", 64)
                with client.pipeline(transaction=False) as pipe:  # the bare index entries
                    for sender, peer in pairs:
                        low, high = sorted((sender, peer))
                        thread = f"dm:{low}:{high}"
                        for user in (low, high):
                            pipe.hset(floor_keys.index(keys.partition(thread), user), thread,
                                      "1796464541657-0")
                    pipe.execute()
                floor = used_memory(client) - floor_base
            finally:
                client.close()
                server.stop()
    n = len(pairs)
    return {"threads": n, "per_thread_after": (after - base) / n,
            "per_thread_before": (filled - base - dedupe) / n, "index_floor": floor / n,
            "streams_or_states_left": left, "busy_before": world.busy_before}


async def idle_memory(opts: Options) -> Result:
    result = Result()
    runs = await counted_runs(
        opts, result, "idle memory", lambda: idle_memory_run(opts),
        lambda r: (f"{r['per_thread_after']:.0f} B/thread after retention "
                   f"({r['per_thread_before']:.0f} before; two index entries alone "
                   f"{r['index_floor']:.0f}); {r['streams_or_states_left']} streams/states left"))
    result.rows += [
        Row(f"Redis per idle archived thread, {opts.idle_threads:,} threads", "B",
            [value(r, "per_thread_after") for r in runs], 400, lower=True),
        Row("  same threads before retention (same run)", "B",
            [value(r, "per_thread_before") for r in runs], lower=True, ceiling=True),
        Row("  their two index entries alone (same run)", "B",
            [value(r, "index_floor") for r in runs], lower=True, ceiling=True),
    ]
    return result


async def archive_sync_run(opts: Options) -> dict[str, Any]:
    events, retained = opts.events, opts.events // 10
    async with scratch(opts, "tiers", database=True, gateway=True) as world:
        prefix, port = world.prefix, world.server.port
        await prefill(prefix, events, thread="dm:cold:filler", users=("cold", "filler"))
        await asyncio.to_thread(_burst, REDIS_URL, world.database_url, prefix,
                                DUOLOGUE_RETAIN_EVENTS=str(retained))
        await prefill(prefix, events, thread="dm:filler:hot", users=("hot", "filler"))
        archived, streamed = [
            await load({"mode": "sync", "port": port, "user": user, "thread": thread,
                        "expect": events}, 120)
            for user, thread in (("cold", "dm:cold:filler"), ("hot", "dm:filler:hot"))]
    return {"archive_ms": archived["ms"], "stream_ms": streamed["ms"],
            "ratio": archived["ms"] / streamed["ms"], "ok": archived["ok"] and streamed["ok"],
            "events": events, "archived_only": events - retained,
            "busy_before": world.busy_before}


async def archive_sync(opts: Options) -> Result:
    result = Result()
    runs = await counted_runs(
        opts, result, "archive sync", lambda: archive_sync_run(opts),
        lambda r: (f"{r['archive_ms']:.1f} ms with {r['archived_only']:,} from the archive, "
                   f"{r['stream_ms']:.1f} ms all from the stream: {r['ratio']:.2f}x, "
                   f"ok={r['ok']}"))
    label = f"{opts.events:,} events, {opts.events - opts.events // 10:,} archive-only"
    result.rows += [
        Row(f"sync after 0, {label} / all in the stream", "x",
            [value(r, "ratio", ok=r.get("ok")) for r in runs], 2.0, lower=True, digits=2),
        Row("  sync after 0 across archive and stream", "ms",
            [value(r, "archive_ms") for r in runs], lower=True, digits=1),
        Row("  the same replay wholly from the stream (same run)", "ms",
            [value(r, "stream_ms") for r in runs], lower=True, digits=1, ceiling=True),
    ]
    if any(not r.get("ok") for r in runs):
        result.notes.append("a sync run did not deliver every event exactly once in order")
    return result


RETAINING = {"DUOLOGUE_RETAIN_EVENTS": "50", "DUOLOGUE_RETENTION_EVERY": "2"}
NOT_RETAINING = {"DUOLOGUE_RETENTION_EVERY": "0"}


async def _pair(opts: Options) -> dict[str, Any]:
    off = await project_backlog(opts, 1, NOT_RETAINING)
    on = await project_backlog(opts, 1, RETAINING)
    ratio = on["rate"] / off["rate"] if off.get("rate") else math.nan
    other = max(on["cpu"].get("other", 0.0), off["cpu"].get("other", 0.0))
    return {"on": on, "off": off, "ratio": ratio, "cpu": {"other": other}}


def _say_pair(run: dict[str, Any]) -> str:
    on, off = run["on"], run["off"]
    return (f"{on['rate']:,.0f} events/s retaining (Redis kept {on['redis_events']:,} of "
            f"{on['events']:,}) vs {off['rate']:,.0f} not (kept {off['redis_events']:,}): "
            f"{run['ratio']:.2f}x")


async def retention(opts: Options) -> Result:
    result = Result()
    runs = await counted_runs(opts, result, "projector with retention", lambda: _pair(opts),
                              _say_pair)
    label = f"{opts.backlog:,} events / {opts.backlog_threads:,} threads"
    result.rows += [
        Row(f"projector with retention / without, {label}", "x",
            [value(r, "ratio") for r in runs], 0.9, digits=2),
        Row("  projector events/s, retention trimming to 50 per thread", "events/s",
            [value(r, "on", "rate") for r in runs]),
        Row("  projector events/s, retention off (same run)", "events/s",
            [value(r, "off", "rate") for r in runs], ceiling=True),
    ]
    return result

