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
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis

from adapters.record import Keys
from bench import pg
from bench.backlog import prefill, project_backlog
from bench.common import REDIS_URL, ROOT, wait_quiet
from bench.driver import go_all, workers
from bench.harness import counted_runs, scratch, value
from bench.options import Options
from bench.report import Result, Row
from duologue.embedded import EmbeddedRedis
from gateway.store import APPEND_LUA, append_call
from schemas.events import MessageSent

PEERS = 5  # each user starts threads with the next five: ~10 threads per user


def _burst(redis_url: str, database_url: str, prefix: str, **env: str) -> None:
    """``duologue projector --burst`` until it has drained and made its retention pass."""
    settings = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
                "DUOLOGUE_PREFIX": prefix, "DUOLOGUE_LOG_LEVEL": "WARNING", **env}
    done = subprocess.run([sys.executable, "-m", "duologue.cli", "projector", "--burst"],
                          env=settings, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"projector --burst exited {done.returncode}: {done.stderr[-2000:]}")


def _used(client: redis.Redis) -> int:
    info: Any = client.info("memory")
    return int(info["used_memory"])


def _threads(count: int) -> list[tuple[str, str]]:
    """(sender, peer) of ``count`` distinct threads, ~10 per user."""
    users = count // PEERS + 1
    pairs = [(f"u{i:06d}", f"u{(i + k) % users:06d}") for i in range(users)
             for k in range(1, PEERS + 1)]
    return pairs[:count]


def _fill(client: redis.Redis, keys: Keys, pairs: list[tuple[str, str]]) -> None:
    sha = str(client.script_load(APPEND_LUA))
    for start in range(0, len(pairs), 1000):
        with client.pipeline(transaction=False) as pipe:
            for n, (sender, peer) in enumerate(pairs[start:start + 1000], start):
                low, high = sorted((sender, peer))
                cmid = f"m{n}"
                event = MessageSent(sender=sender, body=f"the only message #{n}",
                                    client_msg_id=cmid)
                k, args = append_call(keys, 86400, f"dm:{low}:{high}", sender, cmid, event)
                pipe.evalsha(sha, len(k), *k, *args)
            for status, *_ in pipe.execute():
                if int(status) != 0:
                    raise RuntimeError(f"append.lua answered {status}")


def _delete(client: redis.Redis, pattern: str) -> None:
    batch = list(client.scan_iter(match=pattern, count=1000))
    for start in range(0, len(batch), 500):
        client.delete(*batch[start:start + 500])


async def idle_memory_run(opts: Options) -> dict[str, Any]:
    busy_before = await wait_quiet(opts.quiet_wait)  # no scratch: a private server
    prefix = "dl"  # a private server: the key names of a real deployment
    keys = Keys(prefix, 64)
    with tempfile.TemporaryDirectory(prefix="dlbench-redis-") as directory, \
            pg.database("idle") as url:
        server = EmbeddedRedis(Path(directory), persist=False).start()
        client = redis.Redis.from_url(server.url)
        try:
            pairs = _threads(opts.idle_threads)
            base = _used(client)
            _fill(client, keys, pairs)
            filled = _used(client)
            dedupe = sum(client.memory_usage(k, samples=0) or 0
                         for k in client.scan_iter(match=keys.dedupe_pattern(), count=1000))
            await asyncio.to_thread(_burst, server.url, url, prefix, DUOLOGUE_RETAIN_IDLE="0")
            _delete(client, keys.dedupe_pattern())  # the 24 h idempotency records: not counted
            after = _used(client)
            left = sum(1 for k in client.scan_iter(match=keys.thread_pattern(), count=1000))
            floor_base = _used(client)
            floor_keys = Keys("floor", 64)
            with client.pipeline(transaction=False) as pipe:  # the bare index entries
                for sender, peer in pairs:
                    low, high = sorted((sender, peer))
                    thread = f"dm:{low}:{high}"
                    part = keys.partition(thread)
                    for user in (low, high):
                        pipe.hset(floor_keys.index(part, user), thread, "1796464541657-0")
                pipe.execute()
            floor = _used(client) - floor_base
        finally:
            client.close()
            server.stop()
    n = len(pairs)
    return {"threads": n, "per_thread_after": (after - base) / n,
            "per_thread_before": (filled - base - dedupe) / n, "index_floor": floor / n,
            "streams_or_states_left": left, "busy_before": busy_before}


async def idle_memory(opts: Options) -> Result:
    result = Result()
    for n in range(opts.runs):
        run = await idle_memory_run(opts)
        result.runs.append(run)
        print(f"  idle memory run {n + 1}: {run['per_thread_after']:.0f} B/thread after "
              f"retention ({run['per_thread_before']:.0f} before; two index entries alone "
              f"{run['index_floor']:.0f}); {run['streams_or_states_left']} streams/states left",
              flush=True)
    runs = result.runs
    result.rows += [
        Row("tiers", f"Redis per idle archived thread, {opts.idle_threads:,} threads", "B",
            [r["per_thread_after"] for r in runs], 400, higher_is_better=False, digits=0),
        Row("tiers", "  same threads before retention (same run)", "B",
            [r["per_thread_before"] for r in runs], higher_is_better=False, digits=0,
            ceiling=True),
        Row("tiers", "  their two index entries alone (same run)", "B",
            [r["index_floor"] for r in runs], higher_is_better=False, digits=0, ceiling=True),
    ]
    return result


async def _timed_sync(port: int, user: str, thread: str) -> dict[str, Any]:
    spec = {"mode": "sync", "port": port, "user": user, "thread": thread}
    async with workers([spec]) as ws:
        await go_all(ws, "ready", 60)
        return await ws[0].result(120)


async def archive_sync_run(opts: Options) -> dict[str, Any]:
    events, retained = opts.events, opts.events // 10
    async with scratch(opts, "tiers", database=True, gateway=True) as world:
        prefix, url, port = world.prefix, world.database_url, world.server.port
        cold = ("cold", "filler", "dm:cold:filler")
        hot = ("hot", "filler", "dm:filler:hot")
        await prefill(prefix, events, thread=cold[2], users=cold[:2])
        await asyncio.to_thread(_burst, REDIS_URL, url, prefix,
                                DUOLOGUE_RETAIN_EVENTS=str(retained))
        await prefill(prefix, events, thread=hot[2], users=hot[:2])  # stream only
        archived = await _timed_sync(port, cold[0], cold[2])
        streamed = await _timed_sync(port, hot[0], hot[2])
        busy_before = world.busy_before
    ok = all(r["events"] == events == r["distinct"] and r["in_order"] and r["recovered"]
             and r["last_id_matches"] for r in (archived, streamed))
    return {"archive_ms": archived["ms"], "stream_ms": streamed["ms"],
            "ratio": archived["ms"] / streamed["ms"], "ok": ok, "events": events,
            "archived_only": events - retained, "busy_before": busy_before}


async def archive_sync(opts: Options) -> Result:
    result = Result()
    for n in range(opts.runs):
        run = await archive_sync_run(opts)
        result.runs.append(run)
        print(f"  archive sync run {n + 1}: {run['archive_ms']:.1f} ms with "
              f"{run['archived_only']:,} from the archive, {run['stream_ms']:.1f} ms all from "
              f"the stream: {run['ratio']:.2f}x, ok={run['ok']}", flush=True)
    runs = result.runs
    label = f"{opts.events:,} events, {runs[0]['archived_only']:,} archive-only"
    result.rows += [
        Row("tiers", f"sync after 0, {label} / all in the stream", "x",
            [r["ratio"] if r["ok"] else math.nan for r in runs], 2.0, higher_is_better=False,
            digits=2),
        Row("tiers", "  sync after 0 across archive and stream", "ms",
            [r["archive_ms"] for r in runs], higher_is_better=False, digits=1),
        Row("tiers", "  the same replay wholly from the stream (same run)", "ms",
            [r["stream_ms"] for r in runs], higher_is_better=False, digits=1, ceiling=True),
    ]
    if any(not r["ok"] for r in runs):
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
        Row("tiers", f"projector with retention / without, {label}", "x",
            [value(r, "ratio") for r in runs], 0.9, digits=2),
        Row("tiers", "  projector events/s, retention trimming to 50 per thread", "events/s",
            [value(r, "on", "rate") for r in runs]),
        Row("tiers", "  projector events/s, retention off (same run)", "events/s",
            [value(r, "off", "rate") for r in runs], ceiling=True),
    ]
    return result

