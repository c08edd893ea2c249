"""Redis memory per hot event, by structure: the per-shard memory of docs/capacity.md.

``redis_memory``: on a private ``redis-server`` (no persistence, the real key names), the
projector figure's backlog mix (``--backlog`` events over ``--backlog-threads`` threads,
85 % sends, edits, deletes and receipts, each through ``append.lua``) is appended, and
``INFO used_memory`` is read before, after, and after removing each structure in turn:

- the 24 h idempotency records (one key per command; protocol.md section 1 keeps them a
  day whatever retention does),
- the partition logs (the projector's feed; trimmed once projected, so they hold only
  the projector's lag),
- what stays while a thread is hot: its stream (up to ``DUOLOGUE_RETAIN_EVENTS``
  events), its state hash and its two index entries.

Each row is bytes per event. The same run's ceiling: a bare ``XADD`` of the same event
payload into one stream (the least a stream entry can cost). Two more rows measure a
design not built: the same idempotency records as fields (``client_msg_id`` -> event id)
of hashes of 500 fields (a listpack: ``hash-max-listpack-entries`` is 512, as a day's
bucket per thread and sender would hold them) and of 2,000 (past it: a hash table).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import redis

from adapters.record import Keys
from adapters.redis_connect import scan_keys
from bench.backlog import fill
from bench.harness import (
    Result,
    Row,
    counted_runs,
    delete_matching,
    scratch,
    used_memory,
    value,
)
from bench.options import Options
from duologue.embedded import EmbeddedRedis

PREFIX = "dl"  # a private server: the key names of a real deployment
SMALL_HASH, LARGE_HASH = 500, 2000  # fields a hash: a listpack (up to 512), a hash table


def _drop(client: redis.Redis, pattern: str) -> None:
    delete_matching(client, pattern)
    client.execute_command("MEMORY", "PURGE")  # type: ignore[no-untyped-call]


def _bare_xadd(client: redis.Redis, count: int) -> int:
    """Bytes per entry of ``count`` entries shaped like the backlog's sends in one stream."""
    before = used_memory(client)
    payload = ('{"type":"message_sent","sender":"b00000a","body":"backlog message 1: the quick '
               'brown fox jumps over the lazy dog","client_msg_id":"bl-1"}')
    with client.pipeline(transaction=False) as pipe:
        for n in range(count):
            pipe.xadd(f"{PREFIX}:bare", {"e": payload, "n": str(n)})
            if n % 1000 == 999:
                pipe.execute()
        pipe.execute()
    return (used_memory(client) - before) // max(count, 1)


def _as_hashes(client: redis.Redis, pattern: str, per_hash: int) -> int:
    """Bytes the idempotency records take as fields (``client_msg_id`` -> event id) of
    hashes of ``per_hash`` fields each (built beside them, measured, removed). Up to 512
    fields a hash (``hash-max-listpack-entries``) it is a compact listpack; past that, a
    hash table."""
    keys = list(scan_keys(client, pattern))
    before = used_memory(client)
    for start in range(0, len(keys), 1000):
        chunk = keys[start:start + 1000]
        with client.pipeline(transaction=False) as pipe:
            for n, (key, event_id) in enumerate(zip(chunk, client.mget(chunk), strict=True)):
                cmid = key.decode().rpartition(":")[2]
                pipe.hset(f"{PREFIX}:dh:{(start + n) // per_hash}", cmid, event_id or b"")
            pipe.execute()
    used = used_memory(client) - before
    _drop(client, f"{PREFIX}:dh:*")
    return used


def _measure(opts: Options, url: str) -> dict[str, Any]:
    keys = Keys(PREFIX, 64)
    client = redis.Redis.from_url(url)
    try:
        base = used_memory(client)
        expected = fill(PREFIX, opts.backlog, opts.backlog_threads, url=url)
        events = expected.events
        filled = used_memory(client)
        small = _as_hashes(client, keys.dedupe_pattern(), SMALL_HASH)
        large = _as_hashes(client, keys.dedupe_pattern(), LARGE_HASH)
        _drop(client, keys.dedupe_pattern())
        no_dedupe = used_memory(client)
        _drop(client, f"{PREFIX}:{{p*}}:log")
        hot = used_memory(client)
        bare = _bare_xadd(client, min(events, 100_000))
    finally:
        client.close()
    return {"events": events, "threads": expected.threads,
            "all": (filled - base) / events, "dedupe": (filled - no_dedupe) / events,
            "dedupe_small_hashes": small / events, "dedupe_large_hashes": large / events,
            "log": (no_dedupe - hot) / events, "hot": (hot - base) / events, "bare_xadd": bare}


async def redis_memory_run(opts: Options) -> dict[str, Any]:
    async with scratch(opts, "rmem") as world:
        with tempfile.TemporaryDirectory(prefix="dlbench-redis-") as directory:
            server = EmbeddedRedis(Path(directory), persist=False).start()
            try:
                run = await asyncio.to_thread(_measure, opts, server.url)
            finally:
                server.stop()
    return run | {"busy_before": world.busy_before}


async def redis_memory(opts: Options) -> Result:
    result = Result()
    runs = await counted_runs(
        opts, result, "redis memory", lambda: redis_memory_run(opts),
        lambda r: (f"{r['all']:.0f} B/event in all: idempotency records {r['dedupe']:.0f}, "
                   f"partition log {r['log']:.0f}, stream+state+index {r['hot']:.0f}; "
                   f"bare XADD {r['bare_xadd']} B"))
    label = f"{opts.backlog:,} events / {opts.backlog_threads:,} threads"
    result.rows += [
        Row(f"Redis memory per event, everything the append writes, {label}", "B",
            [value(r, "all") for r in runs], lower=True),
        Row("  its 24 h idempotency record", "B", [value(r, "dedupe") for r in runs], lower=True),
        Row(f"  the same record as a hash field, {SMALL_HASH} a hash (listpack; not built)",
            "B", [value(r, "dedupe_small_hashes") for r in runs], lower=True),
        Row(f"  the same record as a hash field, {LARGE_HASH} a hash (hash table; not built)",
            "B", [value(r, "dedupe_large_hashes") for r in runs], lower=True),
        Row("  its partition-log entry (until projected)", "B",
            [value(r, "log") for r in runs], lower=True),
        Row("  its thread stream entry, state and index share (while retained)", "B",
            [value(r, "hot") for r in runs], lower=True),
        Row("bare XADD of the same payload into one stream (same run)", "B",
            [value(r, "bare_xadd") for r in runs], lower=True, ceiling=True),
    ]
    return result
